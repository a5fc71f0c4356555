/**
 * BackupGroup: `<type>/<id>` inside a namespace (spec datastore.md §1-2). Type is host, vm or
 * ct; id matches `[A-Za-z0-9_][A-Za-z0-9._-]*`. Instances are immutable and always valid, so
 * their paths are safe to join to the datastore root.
 */
import { BackupNamespace } from './namespace.js';
import { parseBackupType, validateBackupId, type BackupType } from './names.js';

export class BackupGroup {
  readonly type: BackupType;
  readonly id: string;
  readonly ns: BackupNamespace;

  constructor(type: BackupType | string, id: string, ns: BackupNamespace = BackupNamespace.root) {
    this.type = parseBackupType(type);
    validateBackupId(id);
    this.id = id;
    this.ns = ns;
  }

  /** Parse `host/<id>` (the group path relative to its namespace). */
  static parse(s: string, ns: BackupNamespace = BackupNamespace.root): BackupGroup {
    const parts = s.split('/');
    if (parts.length !== 2) throw new Error(`invalid backup group ${JSON.stringify(s)} (expected <type>/<id>)`);
    return new BackupGroup(parts[0], parts[1], ns);
  }

  /** Relative directory from the datastore root: `ns/a/host/x`. */
  get path(): string {
    return this.ns.isRoot ? `${this.type}/${this.id}` : `${this.ns.path}/${this.type}/${this.id}`;
  }

  /** The same type/id in another namespace. */
  inNamespace(ns: BackupNamespace): BackupGroup {
    return new BackupGroup(this.type, this.id, ns);
  }

  equals(other: BackupGroup): boolean {
    return this.type === other.type && this.id === other.id && this.ns.equals(other.ns);
  }

  /** `host/x`, prefixed with `[a/b] ` outside the root namespace. */
  toString(): string {
    return this.ns.isRoot ? `${this.type}/${this.id}` : `[${this.ns.name}] ${this.type}/${this.id}`;
  }
}
