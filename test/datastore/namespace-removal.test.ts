import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { OWNER, makeSnapshot, tempStore } from './maintenance-helpers.js';

const T = 1_700_000_000;
const ns = (s: string) => BackupNamespace.parse(s);

describe('DataStore.removeGroup', () => {
  it('removes every unprotected snapshot and the group dir only when nothing protected is left', async () => {
    const ds = await tempStore();
    const g = new BackupGroup('host', 'a');
    for (let i = 0; i < 3; i++) await makeSnapshot(ds, g, T + i);
    await ds.setProtected(new BackupDir(g, T + 1), true);
    expect(await ds.removeGroup(g)).toEqual({ removedSnapshots: 2, protectedSnapshots: 1, groupRemoved: false });
    expect(readdirSync(ds.groupPath(g)).sort()).toEqual(['2023-11-14T22:13:21Z', 'owner']);
    await ds.setProtected(new BackupDir(g, T + 1), false);
    expect(await ds.removeGroup(g)).toEqual({ removedSnapshots: 1, protectedSnapshots: 0, groupRemoved: true });
    expect(existsSync(ds.groupPath(g))).toBe(false);
    await expect(ds.removeGroup(g)).rejects.toThrow(/backup group host\/a does not exist/);
  });

  it('fails while a backup of the group runs', async () => {
    const ds = await tempStore();
    const g = new BackupGroup('host', 'a');
    await makeSnapshot(ds, g, T);
    const w = await ds.beginBackup(g.ns, g, T + 1, { owner: OWNER });
    await expect(ds.removeGroup(g)).rejects.toThrow(/locked by another backup/);
    await w.abort();
    expect((await ds.listSnapshots(g)).length).toBe(1);
  });
});

describe('DataStore.removeNamespace', () => {
  it('removes an empty namespace tree bottom-up', async () => {
    const ds = await tempStore();
    for (const n of ['a', 'a/b', 'a/b/c', 'a/d']) await ds.createNamespace(ns(n));
    const r = await ds.removeNamespace(ns('a'));
    expect(r.removedNamespaces.map(String)).toEqual(['a/b/c', 'a/b', 'a/d', 'a']);
    expect((await ds.listNamespaces()).map(String)).toEqual(['<root>']);
    expect(readdirSync(ds.path).sort()).toEqual(['.chunks', '.lock', 'ns']);
  });

  it('needs deleteGroups when groups exist below, and then removes them', async () => {
    const ds = await tempStore();
    await ds.createNamespace(ns('a'));
    await ds.createNamespace(ns('a/b'));
    const g = new BackupGroup('vm', '100', ns('a/b'));
    await makeSnapshot(ds, g, T);
    await makeSnapshot(ds, new BackupGroup('host', 'root-level'), T); // untouched
    await expect(ds.removeNamespace(ns('a'))).rejects.toThrow(/namespace a is not empty: it holds 1 backup group\(s\) \(\[a\/b\] vm\/100\); deleting them needs delete-groups/);
    expect((await ds.listSnapshots(g)).length).toBe(1);
    const r = await ds.removeNamespace(ns('a'), { deleteGroups: true });
    expect(r).toEqual({ removedGroups: 1, removedSnapshots: 1, removedNamespaces: [ns('a/b'), ns('a')] });
    expect(await ds.namespaceExists(ns('a'))).toBe(false);
    expect((await ds.listGroups()).map(String)).toEqual(['host/root-level']);
  });

  it('refuses to delete anything when a protected snapshot is below, and refuses the root', async () => {
    const ds = await tempStore();
    await ds.createNamespace(ns('p'));
    const g1 = new BackupGroup('host', 'one', ns('p'));
    const g2 = new BackupGroup('host', 'two', ns('p'));
    await makeSnapshot(ds, g1, T);
    const d2 = await makeSnapshot(ds, g2, T);
    await ds.setProtected(d2, true);
    await expect(ds.removeNamespace(ns('p'), { deleteGroups: true })).rejects.toThrow(/namespace p holds protected snapshot\(s\) \(\[p\] host\/two\/2023-11-14T22:13:20Z\)/);
    expect((await ds.listGroups(ns('p'))).length).toBe(2);
    await expect(ds.removeNamespace(BackupNamespace.root, { deleteGroups: true })).rejects.toThrow(/root namespace cannot be removed/);
  });

  it('does not delete foreign files: the removal fails instead', async () => {
    const ds = await tempStore();
    await ds.createNamespace(ns('f'));
    await writeFile(path.join(ds.namespacePath(ns('f')), 'keep-me.txt'), 'x');
    await expect(ds.removeNamespace(ns('f'))).rejects.toThrow(/namespace f could not be removed: .* is not empty/);
    expect(existsSync(path.join(ds.namespacePath(ns('f')), 'keep-me.txt'))).toBe(true);
  });
});
