/**
 * BackupDir: one snapshot `<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>` of a group (spec datastore.md
 * §1-2). `time` is epoch seconds (1 … 9999-12-31T23:59:59Z); the directory name is its RFC 3339
 * UTC form. Immutable and always valid.
 */
import { BackupGroup } from './backup-group.js';
import { BackupNamespace } from './namespace.js';
import { formatBackupTime, parseBackupTime } from './names.js';

export class BackupDir {
  readonly group: BackupGroup;
  readonly time: number;
  /** Directory name, e.g. `2024-05-07T14:25:51Z`. */
  readonly timeString: string;

  constructor(group: BackupGroup, time: number) {
    this.group = group;
    this.timeString = formatBackupTime(time);
    this.time = time;
  }

  /** Parse `host/<id>/<time>` (relative to its namespace). */
  static parse(s: string, ns: BackupNamespace = BackupNamespace.root): BackupDir {
    const parts = s.split('/');
    if (parts.length !== 3) throw new Error(`invalid snapshot ${JSON.stringify(s)} (expected <type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>)`);
    return new BackupDir(new BackupGroup(parts[0], parts[1], ns), parseBackupTime(parts[2]));
  }

  /** Relative directory from the datastore root: `ns/a/host/x/2024-05-07T14:25:51Z`. */
  get path(): string {
    return `${this.group.path}/${this.timeString}`;
  }

  equals(other: BackupDir): boolean {
    return this.time === other.time && this.group.equals(other.group);
  }

  /** `host/x/2024-05-07T14:25:51Z`, prefixed with `[a/b] ` outside the root namespace. */
  toString(): string {
    return `${this.group.toString()}/${this.timeString}`;
  }
}
