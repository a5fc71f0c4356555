/**
 * pxar format constants, spec pxar.md §2–3.
 *
 * Item types are SipHash-2-4 values of ASCII tags (keys in siphash.ts) and are u64 on the wire,
 * so they are `bigint` here; `test/format/pxar/siphash.test.ts` recomputes them from their tags.
 * Mode bits are plain numbers (they fit in 32 bits). Stat.flags / feature bits are `bigint`
 * because some feature bits (EXCLUDE_*) do not fit in a double.
 */

// ---- item types (§2) ----------------------------------------------------------------------

/** `__PROXMOX_FORMAT_VERSION__`: u64 format version (=2), first item of a v2 (split) archive. */
export const PXAR_FORMAT_VERSION = 0x730f6c75df16a40dn;
/** `__PROXMOX_FORMAT_ENTRY_V2__`: `Stat` (40 bytes), starts an entry's metadata. */
export const PXAR_ENTRY = 0xd5956474e588acefn;
/** `__PROXMOX_FORMAT_ENTRY__`: legacy `Stat_V1` (32 bytes, mtime in ns), decode only. */
export const PXAR_ENTRY_V1 = 0x11da850a1c1cceffn;
/** `__PROXMOX_FORMAT_PRELUDE__`: opaque bytes right after FORMAT_VERSION (v2 only). */
export const PXAR_PRELUDE = 0xe309d79d9f7b771bn;
/** `__PROXMOX_FORMAT_FILENAME__`: name bytes + NUL, precedes every directory child. */
export const PXAR_FILENAME = 0x16701121063917b3n;
/** `__PROXMOX_FORMAT_SYMLINK__`: symlink target + NUL. */
export const PXAR_SYMLINK = 0x27f971e7dbf5dc5fn;
/** `__PROXMOX_FORMAT_DEVICE__`: major u64, minor u64. */
export const PXAR_DEVICE = 0x9fc9e906586d5ce9n;
/** `__PROXMOX_FORMAT_XATTR__`: name, NUL, value. */
export const PXAR_XATTR = 0x0dab0229b57dcd03n;
/** `__PROXMOX_FORMAT_ACL_USER__`: uid u64, permissions u64. */
export const PXAR_ACL_USER = 0x2ce8540a457d55b8n;
/** `__PROXMOX_FORMAT_ACL_GROUP__`: gid u64, permissions u64. */
export const PXAR_ACL_GROUP = 0x136e3eceb04c03abn;
/** `__PROXMOX_FORMAT_ACL_GROUP_OBJ__`: permissions u64. */
export const PXAR_ACL_GROUP_OBJ = 0x10868031e9582876n;
/** `__PROXMOX_FORMAT_ACL_DEFAULT__`: user_obj, group_obj, other, mask permissions (u64 each). */
export const PXAR_ACL_DEFAULT = 0xbbbb13415a6896f5n;
/** `__PROXMOX_FORMAT_ACL_DEFAULT_USER__`: uid u64, permissions u64. */
export const PXAR_ACL_DEFAULT_USER = 0xc89357b40532cd1fn;
/** `__PROXMOX_FORMAT_ACL_DEFAULT_GROUP__`: gid u64, permissions u64. */
export const PXAR_ACL_DEFAULT_GROUP = 0xf90a8a5816038ffen;
/** `__PROXMOX_FORMAT_FCAPS__`: raw `security.capability` value. */
export const PXAR_FCAPS = 0x2da9dd9db5f7fb67n;
/** `__PROXMOX_FORMAT_QUOTA_PROJID__`: project id u64. */
export const PXAR_QUOTA_PROJID = 0xe07540e82f7d1cbbn;
/** `__PROXMOX_FORMAT_HARDLINK__`: offset u64 (back to the target's FILENAME), path + NUL. */
export const PXAR_HARDLINK = 0x51269c8422bd7275n;
/** `__PROXMOX_FORMAT_PXAR_PAYLOAD__`: raw file bytes (inline in v1, in the payload stream in v2). */
export const PXAR_PAYLOAD = 0x28147a1b0b7c1a25n;
/** `__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__`: offset u64, size u64 into the payload stream. */
export const PXAR_PAYLOAD_REF = 0x419d3d6bc4ba977en;
/** `__PROXMOX_FORMAT_GOODBYE__`: n+1 goodbye items (24 bytes each) closing a directory. */
export const PXAR_GOODBYE = 0x2fec4fa642d5731dn;
/** `__PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__`: hash of the last goodbye item (not an item type). */
export const PXAR_GOODBYE_TAIL_MARKER = 0xef5eed5b753e1555n;
/** `__PROXMOX_FORMAT_PXAR_PAYLOAD_START_MARKER__`: empty item, first 16 bytes of a payload stream. */
export const PXAR_PAYLOAD_START_MARKER = 0x834c68c2194a4ed2n;
/** `__PROXMOX_FORMAT_PXAR_PAYLOAD_TAIL_MARKER__`: empty item, last 16 bytes of a payload stream. */
export const PXAR_PAYLOAD_TAIL_MARKER = 0x6c72b78b984c81b5n;

/** Item-type names, for error messages. */
export const ITEM_NAMES: ReadonlyMap<bigint, string> = new Map([
  [PXAR_FORMAT_VERSION, 'FORMAT_VERSION'],
  [PXAR_ENTRY, 'ENTRY'],
  [PXAR_ENTRY_V1, 'ENTRY_V1'],
  [PXAR_PRELUDE, 'PRELUDE'],
  [PXAR_FILENAME, 'FILENAME'],
  [PXAR_SYMLINK, 'SYMLINK'],
  [PXAR_DEVICE, 'DEVICE'],
  [PXAR_XATTR, 'XATTR'],
  [PXAR_ACL_USER, 'ACL_USER'],
  [PXAR_ACL_GROUP, 'ACL_GROUP'],
  [PXAR_ACL_GROUP_OBJ, 'ACL_GROUP_OBJ'],
  [PXAR_ACL_DEFAULT, 'ACL_DEFAULT'],
  [PXAR_ACL_DEFAULT_USER, 'ACL_DEFAULT_USER'],
  [PXAR_ACL_DEFAULT_GROUP, 'ACL_DEFAULT_GROUP'],
  [PXAR_FCAPS, 'FCAPS'],
  [PXAR_QUOTA_PROJID, 'QUOTA_PROJID'],
  [PXAR_HARDLINK, 'HARDLINK'],
  [PXAR_PAYLOAD, 'PAYLOAD'],
  [PXAR_PAYLOAD_REF, 'PAYLOAD_REF'],
  [PXAR_GOODBYE, 'GOODBYE'],
  [PXAR_PAYLOAD_START_MARKER, 'PAYLOAD_START_MARKER'],
  [PXAR_PAYLOAD_TAIL_MARKER, 'PAYLOAD_TAIL_MARKER'],
]);

// ---- sizes and limits (§1, §2, src/util.rs) -------------------------------------------------

/** Every item starts with `htype u64, full_size u64`. */
export const HEADER_SIZE = 16;
/** One goodbye item: hash u64, offset u64, size u64. */
export const GOODBYE_ITEM_SIZE = 24;
/** `Stat` (ENTRY content). */
export const STAT_SIZE = 40;
/** `Stat_V1` (ENTRY_V1 content). */
export const STAT_V1_SIZE = 32;
/** Longest symlink / hardlink target path (bytes, without NUL). */
export const MAX_PATH_LEN = 4096;
/** Longest file name (bytes, without NUL). */
export const MAX_FILENAME_LEN = 4096;
/** Largest XATTR / FCAPS content: 255-byte name + NUL-less 64 KiB value bound used upstream. */
export const MAX_XATTR_LEN = 255 + 65536;
/**
 * Most XATTR items, or entries of one ACL list, one entry may carry when read (this
 * implementation's bound, far above what file systems allow): a hostile archive could
 * otherwise make one entry's metadata take gigabytes (deduplicated chunks repeat cheaply).
 */
export const MAX_ENTRY_ATTRIBUTES = 65536;
/**
 * Deepest directory nesting the sequential decoder follows (this implementation's bound):
 * each open level keeps its path, so memory grows with the square of the depth. Paths of
 * real trees stay far below it (PATH_MAX is 4096 bytes).
 */
export const MAX_DECODE_DEPTH = 8192;
/**
 * Largest PRELUDE this implementation reads. The format allows up to 2^64-17 bytes; PBS only
 * stores a short JSON document there, so a bigger one is treated as hostile.
 */
export const MAX_PRELUDE_LEN = 16 * 1024 * 1024;
/** The only format version written (FORMAT_VERSION content); absence means version 1. */
export const FORMAT_VERSION_2 = 2;

/** Max content size per item type (§2), or undefined where the format does not bound it. */
export function maxContentSize(htype: bigint): number | undefined {
  switch (htype) {
    case PXAR_FILENAME:
      return MAX_FILENAME_LEN + 1;
    case PXAR_SYMLINK:
      return MAX_PATH_LEN + 1;
    case PXAR_HARDLINK:
      return MAX_PATH_LEN + 1 + 8;
    case PXAR_DEVICE:
    case PXAR_ACL_USER:
    case PXAR_ACL_DEFAULT_USER:
    case PXAR_ACL_GROUP:
    case PXAR_ACL_DEFAULT_GROUP:
    case PXAR_PAYLOAD_REF:
      return 16;
    case PXAR_XATTR:
    case PXAR_FCAPS:
      return MAX_XATTR_LEN;
    case PXAR_ACL_DEFAULT:
      return 32;
    case PXAR_ACL_GROUP_OBJ:
    case PXAR_QUOTA_PROJID:
    case PXAR_FORMAT_VERSION:
      return 8;
    case PXAR_ENTRY:
      return STAT_SIZE;
    case PXAR_ENTRY_V1:
      return STAT_V1_SIZE;
    case PXAR_PRELUDE:
      return MAX_PRELUDE_LEN;
    case PXAR_PAYLOAD_START_MARKER:
    case PXAR_PAYLOAD_TAIL_MARKER:
      return 0;
    default:
      return undefined;
  }
}

// ---- mode bits (§3.4) -----------------------------------------------------------------------

/** File-type mask of `mode`. */
export const IFMT = 0o170000;
export const IFSOCK = 0o140000;
export const IFLNK = 0o120000;
export const IFREG = 0o100000;
export const IFBLK = 0o060000;
export const IFDIR = 0o040000;
export const IFCHR = 0o020000;
export const IFIFO = 0o010000;
export const ISUID = 0o004000;
export const ISGID = 0o002000;
export const ISVTX = 0o001000;

// ---- ACL (§3.2) -----------------------------------------------------------------------------

export const ACL_READ = 4;
export const ACL_WRITE = 2;
export const ACL_EXECUTE = 1;
/** Wire value of a missing ACL_DEFAULT permission (represented as `null` in `AclDefault`). */
export const ACL_NO_MASK = 0xffffffffffffffffn;

// ---- Stat.flags: per-entry attribute bits (§3.5) --------------------------------------------

/** FAT ATTR_HIDDEN. */
export const WITH_FLAG_HIDDEN = 0x2000n;
/** FAT ATTR_SYS. */
export const WITH_FLAG_SYSTEM = 0x4000n;
/** FAT ATTR_ARCH. */
export const WITH_FLAG_ARCHIVE = 0x8000n;
/** chattr FS_APPEND_FL. */
export const WITH_FLAG_APPEND = 0x10000n;
/** chattr FS_NOATIME_FL. */
export const WITH_FLAG_NOATIME = 0x20000n;
/** chattr FS_COMPR_FL. */
export const WITH_FLAG_COMPR = 0x40000n;
/** chattr FS_NOCOW_FL. */
export const WITH_FLAG_NOCOW = 0x80000n;
/** chattr FS_NODUMP_FL. */
export const WITH_FLAG_NODUMP = 0x100000n;
/** chattr FS_DIRSYNC_FL. */
export const WITH_FLAG_DIRSYNC = 0x200000n;
/** chattr FS_IMMUTABLE_FL. */
export const WITH_FLAG_IMMUTABLE = 0x400000n;
/** chattr FS_SYNC_FL. */
export const WITH_FLAG_SYNC = 0x800000n;
/** chattr FS_NOCOMP_FL. */
export const WITH_FLAG_NOCOMP = 0x1000000n;
/** chattr FS_PROJINHERIT_FL. */
export const WITH_FLAG_PROJINHERIT = 0x2000000n;

/** chattr flag bits that `Stat.flags` can carry. */
export const WITH_CHATTR =
  WITH_FLAG_APPEND |
  WITH_FLAG_NOATIME |
  WITH_FLAG_COMPR |
  WITH_FLAG_NOCOW |
  WITH_FLAG_NODUMP |
  WITH_FLAG_DIRSYNC |
  WITH_FLAG_IMMUTABLE |
  WITH_FLAG_SYNC |
  WITH_FLAG_NOCOMP |
  WITH_FLAG_PROJINHERIT;
/** FAT attribute bits that `Stat.flags` can carry. */
export const WITH_FAT_ATTRS = WITH_FLAG_HIDDEN | WITH_FLAG_SYSTEM | WITH_FLAG_ARCHIVE;

// ---- archive-wide feature bits (§3.5, not stored per entry) ---------------------------------

export const WITH_2SEC_TIME = 0x40n;
export const WITH_READ_ONLY = 0x80n;
export const WITH_PERMISSIONS = 0x100n;
export const WITH_SYMLINKS = 0x200n;
export const WITH_DEVICE_NODES = 0x400n;
export const WITH_FIFOS = 0x800n;
export const WITH_SOCKETS = 0x1000n;
export const WITH_SUBVOLUME = 0x4000000n;
export const WITH_SUBVOLUME_RO = 0x8000000n;
export const WITH_XATTRS = 0x10000000n;
export const WITH_ACL = 0x20000000n;
export const WITH_SELINUX = 0x40000000n;
export const WITH_FCAPS = 0x80000000n;
export const WITH_QUOTA_PROJID = 0x1_0000_0000n;
export const WITH_OWNER = 0x2_0000_0000n;
export const EXCLUDE_FILE = 0x1000_0000_0000_0000n;
export const EXCLUDE_SUBMOUNTS = 0x4000_0000_0000_0000n;
export const EXCLUDE_NODUMP = 0x8000_0000_0000_0000n;
