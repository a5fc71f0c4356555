/**
 * JSON shapes of the REST listing calls (spec protocol.md §5), with PBS's kebab-case field
 * names (`pbs-api-types`: DataStoreListItem, GroupListItem, SnapshotListItem, BackupContent,
 * NamespaceListItem). Optional fields are left out when PBS skips them.
 */
import type { BackupType, CryptMode } from '../format/manifest.js';

export interface DataStoreListItem {
  store: string;
  comment: string | null;
  maintenance?: string;
}

export interface BackupContent {
  filename: string;
  'crypt-mode'?: CryptMode;
  size?: number;
}

export interface GroupListItem {
  'backup-type': BackupType;
  'backup-id': string;
  'last-backup': number;
  'backup-count': number;
  files: string[];
  owner?: string;
  comment?: string;
}

export interface SnapshotVerifyState {
  state: 'ok' | 'failed';
  upid: string;
}

export interface SnapshotListItem {
  'backup-type': BackupType;
  'backup-id': string;
  'backup-time': number;
  comment?: string;
  verification?: SnapshotVerifyState;
  fingerprint?: string;
  files: BackupContent[];
  size?: number;
  owner?: string;
  protected: boolean;
}

export interface NamespaceListItem {
  /** `a/b/c`; the root namespace is `""`. */
  ns: string;
  comment?: string;
}

export interface VersionInfo {
  version: string;
  release: string;
  repoid: string;
}
