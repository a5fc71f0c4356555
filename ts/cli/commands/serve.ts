/**
 * `pxb serve` (PBS's backup/reader protocol over HTTPS on local datastores) and `pxb token`
 * (API tokens of that server).
 */
import { Option, type Command } from 'commander';
import { defaultConfigDir, parseDatastoreSpec, parseListen } from '../../server/config.js';
import type { SyncLevel } from '../../datastore/datastore.js';
import { PxbServer } from '../../server/server.js';
import { ROLES, TokenStore, parseRole, type Role } from '../../server/tokens.js';
import { printJSON, table, UsageError, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';

const collect = (v: string, acc: string[]) => [...acc, v];

function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function registerServe(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('serve datastores over the Proxmox Backup Server protocol (HTTPS, API tokens)')
    .option('--listen <addr>', 'listen address host:port', '127.0.0.1:8007')
    .option('--datastore <name=path>', 'datastore to serve (repeatable)', collect, [] as string[])
    .option('--config <dir>', 'config directory (certificate, tokens; default ~/.config/pxb/server)')
    .addOption(
      new Option('--sync-level <level>', "when written data is synced: 'file' fsyncs every chunk, 'filesystem' syncs the file system once per backup before its manifest (PBS's default), 'none' never")
        .choices(['none', 'file', 'filesystem'])
        .default('filesystem'),
    )
    .option('--no-fsync', 'the same as --sync-level none (faster, not crash-safe)')
    .action(async (o: { listen: string; datastore: string[]; config?: string; fsync: boolean; syncLevel: SyncLevel }) => {
      const listen = usage(() => parseListen(o.listen));
      if (!o.datastore.length) throw new UsageError('give at least one --datastore NAME=PATH');
      const datastores = new Map(usage(() => o.datastore.map(parseDatastoreSpec)));
      const configDir = o.config ?? defaultConfigDir(ctx.env);
      const server = await PxbServer.start({
        datastores,
        configDir,
        host: listen.host,
        port: listen.port,
        syncLevel: o.fsync ? o.syncLevel : 'none',
        log: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
      });
      if (server.certificateCreated) process.stdout.write(`created a self-signed certificate in ${configDir}\n`);
      const { host, port } = server.address;
      process.stdout.write(`fingerprint: ${server.fingerprint}\n`);
      process.stdout.write(`listening on https://${host.includes(':') ? `[${host}]` : host}:${port}\n`);
      for (const [name, dir] of datastores) process.stdout.write(`datastore ${name}: ${dir}\n`);
      if (!ctx.signal.aborted) await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
      process.stderr.write('shutting down (unfinished backups are removed)\n');
      await server.close();
    });
}

export function registerToken(program: Command, ctx: CliContext): void {
  const token = program.command('token').description('API tokens of pxb serve');
  const configOption = () => new Option('--config <dir>', 'config directory of pxb serve (default ~/.config/pxb/server)');
  const store = (o: { config?: string }) => new TokenStore(o.config ?? defaultConfigDir(ctx.env));

  token
    .command('create')
    .description('create an API token; prints its secret once (last line)')
    .argument('<token-id>', 'user@realm!tokenname')
    .requiredOption('--datastore <name>', 'datastore the role applies to (repeatable)', collect, [] as string[])
    .addOption(new Option('--role <role>', 'role on those datastores').choices([...ROLES]).makeOptionMandatory())
    .addOption(configOption())
    .action(async (tokenId: string, o: { datastore: string[]; role: string; config?: string }) => {
      if (!o.datastore.length) throw new UsageError('give at least one --datastore NAME');
      const role: Role = usage(() => parseRole(o.role));
      const grants = Object.fromEntries(o.datastore.map((d) => [d, role])) as Record<string, Role>;
      const created = await store(o).create(tokenId, grants);
      process.stdout.write(`token ${created.tokenId}: role ${role} on ${o.datastore.join(', ')}\n`);
      process.stdout.write('secret (shown only now, store it safely):\n');
      process.stdout.write(`${created.secret}\n`);
    });

  token
    .command('list')
    .description('list API tokens')
    .addOption(configOption())
    .addOption(outputFormatOption())
    .action(async (o: { config?: string; outputFormat: OutputFormat }) => {
      const tokens = await store(o).list();
      if (o.outputFormat !== 'text') return printJSON(o.outputFormat, tokens);
      const iso = (t: number) => new Date(t * 1000).toISOString().replace('.000Z', 'Z');
      const rows = tokens.map((t) => [t.tokenId, Object.entries(t.datastores).map(([d, r]) => `${d}:${r}`).join(' '), iso(t.created)]);
      process.stdout.write(table(['token', 'roles', 'created'], rows));
    });

  token
    .command('delete')
    .description('delete an API token')
    .argument('<token-id>', 'user@realm!tokenname')
    .addOption(configOption())
    .action(async (tokenId: string, o: { config?: string }) => {
      if (!(await store(o).delete(tokenId))) throw new Error(`token ${tokenId} does not exist`);
      process.stdout.write(`token ${tokenId} deleted\n`);
    });
}
