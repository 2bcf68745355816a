/** How to reach the cluster: a ceph.conf and the cephx identity (keyring file or key). */
export interface RbdConfig {
  confPath: string;
  /** cephx user without the "client." prefix. */
  user: string;
  keyringPath?: string;
  key?: string;
  /** Monitor and OSD operation timeout, so a dead cluster fails calls instead of hanging them. */
  timeoutSeconds?: number;
}

export interface SnapshotInfo {
  name: string;
  protected: boolean;
}

export interface WatcherInfo {
  address: string;
  id: string;
}

export interface ImageStatus {
  size: bigint;
  /** "pool/image@snapshot" when the image is a clone that was not flattened. */
  parent: string | null;
  snapshots: SnapshotInfo[];
  /** Clients with the image open (QEMU, rbd-nbd…): an image with watchers is in use. */
  watchers: WatcherInfo[];
  /** The owner mark: UID of the object the operator made the image for; undefined when unmarked. */
  owner: string | undefined;
}
