import koffi from "koffi";

/** librados + librbd through koffi. Loaded only inside worker threads: every call blocks. */
const rados = koffi.load("librados.so.2");
const rbd = koffi.load("librbd.so.1");

koffi.opaque("rados_t_");
koffi.opaque("rados_ioctx_t_");
koffi.opaque("rbd_image_t_");

export const ImageInfo = koffi.struct("rbd_image_info_t", {
  size: "uint64_t",
  obj_size: "uint64_t",
  num_objs: "uint64_t",
  order: "int",
  block_name_prefix: koffi.array("char", 24, "String"),
  parent_pool: "int64_t",
  parent_name: koffi.array("char", 96, "String"),
});
export const ImageSpec = koffi.struct("rbd_image_spec_t", { id: "char *", name: "char *" });
export const LinkedImageSpec = koffi.struct("rbd_linked_image_spec_t", {
  pool_id: "int64_t",
  pool_name: "char *",
  pool_namespace: "char *",
  image_id: "char *",
  image_name: "char *",
  trash: "bool",
});
export const SnapSpec = koffi.struct("rbd_snap_spec_t", { id: "uint64_t", namespace_type: "int", name: "char *" });
export const SnapInfo = koffi.struct("rbd_snap_info_t", { id: "uint64_t", size: "uint64_t", name: "const char *" });
export const Watcher = koffi.struct("rbd_image_watcher_t", { addr: "char *", id: "int64_t", cookie: "uint64_t" });

export type Ptr = unknown;

export const lib = {
  create2: rados.func(
    "int rados_create2(_Out_ rados_t_ **cluster, const char *clustername, const char *name, uint64_t flags)",
  ),
  confReadFile: rados.func("int rados_conf_read_file(rados_t_ *cluster, const char *path)"),
  confSet: rados.func("int rados_conf_set(rados_t_ *cluster, const char *option, const char *value)"),
  connect: rados.func("int rados_connect(rados_t_ *cluster)"),
  shutdown: rados.func("void rados_shutdown(rados_t_ *cluster)"),
  instanceId: rados.func("uint64_t rados_get_instance_id(rados_t_ *cluster)"),
  monCommand: rados.func(
    "int rados_mon_command(rados_t_ *cluster, const char **cmd, size_t cmdlen, const char *inbuf, size_t inbuflen, _Out_ void **outbuf, _Out_ size_t *outbuflen, _Out_ void **outs, _Out_ size_t *outslen)",
  ),
  bufferFree: rados.func("void rados_buffer_free(void *buf)"),
  ioctxCreate: rados.func("int rados_ioctx_create(rados_t_ *cluster, const char *pool, _Out_ rados_ioctx_t_ **ioctx)"),
  ioctxDestroy: rados.func("void rados_ioctx_destroy(rados_ioctx_t_ *ioctx)"),

  list2: rbd.func("int rbd_list2(rados_ioctx_t_ *io, rbd_image_spec_t *images, _Inout_ size_t *max)"),
  imageSpecListCleanup: rbd.func("void rbd_image_spec_list_cleanup(rbd_image_spec_t *images, size_t n)"),
  create2Image: rbd.func(
    "int rbd_create2(rados_ioctx_t_ *io, const char *name, uint64_t size, uint64_t features, _Inout_ int *order)",
  ),
  open: rbd.func("int rbd_open(rados_ioctx_t_ *io, const char *name, _Out_ rbd_image_t_ **image, const char *snap)"),
  close: rbd.func("int rbd_close(rbd_image_t_ *image)"),
  stat: rbd.func("int rbd_stat(rbd_image_t_ *image, _Out_ rbd_image_info_t *info, size_t size)"),
  resize: rbd.func("int rbd_resize(rbd_image_t_ *image, uint64_t size)"),
  snapCreate: rbd.func("int rbd_snap_create(rbd_image_t_ *image, const char *name)"),
  snapRemove: rbd.func("int rbd_snap_remove(rbd_image_t_ *image, const char *name)"),
  snapProtect: rbd.func("int rbd_snap_protect(rbd_image_t_ *image, const char *name)"),
  snapUnprotect: rbd.func("int rbd_snap_unprotect(rbd_image_t_ *image, const char *name)"),
  snapIsProtected: rbd.func("int rbd_snap_is_protected(rbd_image_t_ *image, const char *name, _Out_ int *protected)"),
  snapList: rbd.func("int rbd_snap_list(rbd_image_t_ *image, rbd_snap_info_t *snaps, _Inout_ int *max)"),
  snapListEnd: rbd.func("void rbd_snap_list_end(rbd_snap_info_t *snaps)"),
  clone: rbd.func(
    "int rbd_clone(rados_ioctx_t_ *pio, const char *pname, const char *psnap, rados_ioctx_t_ *cio, const char *cname, uint64_t features, _Inout_ int *order)",
  ),
  getParent: rbd.func(
    "int rbd_get_parent(rbd_image_t_ *image, rbd_linked_image_spec_t *parent, rbd_snap_spec_t *snap)",
  ),
  linkedImageSpecCleanup: rbd.func("void rbd_linked_image_spec_cleanup(rbd_linked_image_spec_t *image)"),
  snapSpecCleanup: rbd.func("void rbd_snap_spec_cleanup(rbd_snap_spec_t *snap)"),
  flatten: rbd.func("int rbd_flatten(rbd_image_t_ *image)"),
  copy: rbd.func("int rbd_copy(rbd_image_t_ *image, rados_ioctx_t_ *dest, const char *name)"),
  watchersList: rbd.func(
    "int rbd_watchers_list(rbd_image_t_ *image, rbd_image_watcher_t *watchers, _Inout_ size_t *max)",
  ),
  watchersListCleanup: rbd.func("void rbd_watchers_list_cleanup(rbd_image_watcher_t *watchers, size_t n)"),
  remove: rbd.func("int rbd_remove(rados_ioctx_t_ *io, const char *name)"),
  rename: rbd.func("int rbd_rename(rados_ioctx_t_ *io, const char *srcname, const char *destname)"),
  metadataGet: rbd.func(
    "int rbd_metadata_get(rbd_image_t_ *image, const char *key, _Out_ uint8_t *value, _Inout_ size_t *vallen)",
  ),
  metadataSet: rbd.func("int rbd_metadata_set(rbd_image_t_ *image, const char *key, const char *value)"),
};

export { koffi };
