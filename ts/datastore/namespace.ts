/**
 * BackupNamespace (spec gc-prune-verify.md §4, datastore.md §1-2): a list of SAFE_ID components,
 * at most 7 deep, name (`a/b/c`) at most 256 characters. The root namespace has no components
 * and is the datastore root itself. On disk each component `c` adds `ns/c`: `ns/a/ns/b`.
 * Instances are immutable and always valid.
 */
import { validateSafeId } from './names.js';

export const MAX_NAMESPACE_DEPTH = 7;
export const MAX_NAMESPACE_LENGTH = 256;

export class BackupNamespace {
  static readonly root = new BackupNamespace([]);

  readonly components: readonly string[];

  private constructor(components: readonly string[]) {
    this.components = Object.freeze([...components]);
  }

  /** From the API/CLI form `a/b/c` ('' = root). */
  static parse(name: string): BackupNamespace {
    if (typeof name !== 'string') throw new Error(`invalid namespace ${String(name)}`);
    if (name === '') return BackupNamespace.root;
    return BackupNamespace.fromComponents(name.split('/'));
  }

  static fromComponents(components: readonly string[]): BackupNamespace {
    if (components.length > MAX_NAMESPACE_DEPTH) {
      throw new Error(`invalid namespace ${JSON.stringify(components.join('/'))}: depth ${components.length} > ${MAX_NAMESPACE_DEPTH}`);
    }
    for (const c of components) validateSafeId(c, 'namespace component');
    const name = components.join('/');
    if (name.length > MAX_NAMESPACE_LENGTH) {
      throw new Error(`invalid namespace ${JSON.stringify(name.slice(0, 40))}…: longer than ${MAX_NAMESPACE_LENGTH} characters`);
    }
    return components.length === 0 ? BackupNamespace.root : new BackupNamespace(components);
  }

  /** From the on-disk relative path `ns/a/ns/b` ('' = root). */
  static fromPath(p: string): BackupNamespace {
    if (p === '') return BackupNamespace.root;
    const parts = p.split('/');
    if (parts.length % 2 !== 0 || parts.some((x, i) => i % 2 === 0 && x !== 'ns')) {
      throw new Error(`invalid namespace path ${JSON.stringify(p)} (expected ns/<a>/ns/<b>…)`);
    }
    return BackupNamespace.fromComponents(parts.filter((_, i) => i % 2 === 1));
  }

  get isRoot(): boolean {
    return this.components.length === 0;
  }

  get depth(): number {
    return this.components.length;
  }

  /** API form `a/b/c` ('' for root). */
  get name(): string {
    return this.components.join('/');
  }

  /** Relative directory `ns/a/ns/b` ('' for root). */
  get path(): string {
    return this.components.map((c) => `ns/${c}`).join('/');
  }

  get parent(): BackupNamespace | null {
    return this.isRoot ? null : BackupNamespace.fromComponents(this.components.slice(0, -1));
  }

  child(component: string): BackupNamespace {
    return BackupNamespace.fromComponents([...this.components, component]);
  }

  equals(other: BackupNamespace): boolean {
    return this.name === other.name;
  }

  /** `a/b/c`, or `<root>` for display. */
  toString(): string {
    return this.isRoot ? '<root>' : this.name;
  }
}
