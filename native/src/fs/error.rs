//! File-system errors that cross into JS as node-style errors: `code` ("ENOENT"), `errno`,
//! `syscall` and `path` (raw bytes, shown lossily as UTF-8 in the message).
use std::os::raw::c_int;

/// Linux errno names, indexed by errno (asm-generic/errno*.h; 41 and 58 are unused).
const NAMES: [&str; 134] = [
    "", "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD",
    "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV", "ENOTDIR",
    "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC", "ESPIPE", "EROFS",
    "EMLINK", "EPIPE", "EDOM", "ERANGE", "EDEADLK", "ENAMETOOLONG", "ENOLCK", "ENOSYS", "ENOTEMPTY",
    "ELOOP", "", "ENOMSG", "EIDRM", "ECHRNG", "EL2NSYNC", "EL3HLT", "EL3RST", "ELNRNG", "EUNATCH",
    "ENOCSI", "EL2HLT", "EBADE", "EBADR", "EXFULL", "ENOANO", "EBADRQC", "EBADSLT", "", "EBFONT",
    "ENOSTR", "ENODATA", "ETIME", "ENOSR", "ENONET", "ENOPKG", "EREMOTE", "ENOLINK", "EADV", "ESRMNT",
    "ECOMM", "EPROTO", "EMULTIHOP", "EDOTDOT", "EBADMSG", "EOVERFLOW", "ENOTUNIQ", "EBADFD", "EREMCHG",
    "ELIBACC", "ELIBBAD", "ELIBSCN", "ELIBMAX", "ELIBEXEC", "EILSEQ", "ERESTART", "ESTRPIPE", "EUSERS",
    "ENOTSOCK", "EDESTADDRREQ", "EMSGSIZE", "EPROTOTYPE", "ENOPROTOOPT", "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT", "EOPNOTSUPP", "EPFNOSUPPORT", "EAFNOSUPPORT", "EADDRINUSE", "EADDRNOTAVAIL",
    "ENETDOWN", "ENETUNREACH", "ENETRESET", "ECONNABORTED", "ECONNRESET", "ENOBUFS", "EISCONN",
    "ENOTCONN", "ESHUTDOWN", "ETOOMANYREFS", "ETIMEDOUT", "ECONNREFUSED", "EHOSTDOWN", "EHOSTUNREACH",
    "EALREADY", "EINPROGRESS", "ESTALE", "EUCLEAN", "ENOTNAM", "ENAVAIL", "EISNAM", "EREMOTEIO",
    "EDQUOT", "ENOMEDIUM", "EMEDIUMTYPE", "ECANCELED", "ENOKEY", "EKEYEXPIRED", "EKEYREVOKED",
    "EKEYREJECTED", "EOWNERDEAD", "ENOTRECOVERABLE", "ERFKILL", "EHWPOISON",
];

/// "ENOENT" for 2; "ERRNO_<n>" for numbers without a name.
pub fn code_name(errno: c_int) -> String {
    match NAMES.get(errno as usize) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("ERRNO_{}", errno),
    }
}

/// strerror text ("No such file or directory"), without std's " (os error N)" suffix.
pub fn describe(errno: c_int) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[derive(Debug, Clone)]
pub struct FsError {
    pub errno: c_int,
    pub syscall: &'static str,
    pub path: Vec<u8>,
    /// Replaces strerror in the message when set (e.g. "not a regular file").
    pub detail: Option<String>,
}

impl FsError {
    pub fn new(errno: c_int, syscall: &'static str, path: &[u8]) -> Self {
        FsError { errno, syscall, path: path.to_vec(), detail: None }
    }

    pub fn code(&self) -> String {
        code_name(self.errno)
    }

    /// Node's format: `ENOENT: no such file or directory, open '/x'`.
    pub fn message(&self) -> String {
        let what = self.detail.clone().unwrap_or_else(|| describe(self.errno));
        format!("{}: {}, {} '{}'", self.code(), what, self.syscall, String::from_utf8_lossy(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names() {
        assert_eq!(code_name(2), "ENOENT");
        assert_eq!(code_name(95), "EOPNOTSUPP");
        assert_eq!(code_name(133), "EHWPOISON");
        assert_eq!(code_name(41), "ERRNO_41");
        assert_eq!(describe(2), "No such file or directory");
        let e = FsError::new(20, "open", b"/a\xffb");
        assert_eq!(e.message(), "ENOTDIR: Not a directory, open '/a\u{fffd}b'");
    }
}
