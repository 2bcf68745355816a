package main

// A tiny cgo binding to librados/librbd: github.com/ceph/go-ceph is not served by the module proxy
// this machine uses, so the few calls the Volume controller needs are called directly. Every call
// is a blocking C call on its own OS thread (the Go scheduler hands the goroutine's P to another
// thread meanwhile), so reconciles of other keys keep running.

/*
#cgo LDFLAGS: -lrbd -lrados
#include <errno.h>
#include <stdlib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"
)

// ownerKey is the image metadata key of the owner mark (the UID of the Volume the image was made
// for), the same key the TypeScript agent writes, so either agent recognises the other's images.
const ownerKey = "kaktus.kowabunga.cloud/owner"

// Layering, exclusive-lock, object-map, fast-diff: the TypeScript agent's feature set.
const rbdFeatures = C.uint64_t(1 | 4 | 8 | 16)

// RbdError is a negative errno from librados/librbd with the operation it came from.
type RbdError struct {
	Op    string
	Errno syscall.Errno
}

func (e *RbdError) Error() string { return fmt.Sprintf("%s: %s", e.Op, e.Errno.Error()) }
func (e *RbdError) Unwrap() error { return e.Errno }

func check(rc C.int, op string) error {
	if rc >= 0 {
		return nil
	}
	return &RbdError{Op: op, Errno: syscall.Errno(-rc)}
}

// ImageStatus is what the Volume controller reads of an image.
type ImageStatus struct {
	Size     uint64
	Owner    string // "" when the image carries no owner mark
	Watchers int
}

// Rbd is one cluster connection with an I/O context per pool, shared by every reconcile.
type Rbd struct {
	confPath, user, keyring string

	mu      sync.Mutex
	cluster C.rados_t
	ioctxs  map[string]C.rados_ioctx_t
	metrics *Metrics
}

func NewRbd(confPath, user, keyring string, m *Metrics) *Rbd {
	return &Rbd{confPath: confPath, user: user, keyring: keyring, ioctxs: map[string]C.rados_ioctx_t{}, metrics: m}
}

// connect opens the cluster connection once; a failed connect is retried by the next call.
func (r *Rbd) connect() (C.rados_t, error) {
	if r.cluster != nil {
		return r.cluster, nil
	}
	var cluster C.rados_t
	cname, cuser := C.CString("ceph"), C.CString("client."+r.user)
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(cuser))
	if err := check(C.rados_create2(&cluster, cname, cuser, 0), "create cluster handle"); err != nil {
		return nil, err
	}
	set := func(k, v string) error {
		ck, cv := C.CString(k), C.CString(v)
		defer C.free(unsafe.Pointer(ck))
		defer C.free(unsafe.Pointer(cv))
		return check(C.rados_conf_set(cluster, ck, cv), "set "+k)
	}
	cconf := C.CString(r.confPath)
	defer C.free(unsafe.Pointer(cconf))
	err := check(C.rados_conf_read_file(cluster, cconf), "read "+r.confPath)
	if err == nil && r.keyring != "" {
		err = set("keyring", r.keyring)
	}
	// The TypeScript agent's timeouts: a Ceph that does not answer fails the call, not the process.
	if err == nil {
		err = set("client_mount_timeout", "10")
	}
	if err == nil {
		err = set("rados_osd_op_timeout", "10")
	}
	if err == nil {
		err = check(C.rados_connect(cluster), "connect to the Ceph cluster")
	}
	if err != nil {
		C.rados_shutdown(cluster)
		return nil, err
	}
	r.cluster = cluster
	return cluster, nil
}

func (r *Rbd) ioctx(pool string) (C.rados_ioctx_t, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if io, ok := r.ioctxs[pool]; ok {
		return io, nil
	}
	cluster, err := r.connect()
	if err != nil {
		return nil, err
	}
	var io C.rados_ioctx_t
	cpool := C.CString(pool)
	defer C.free(unsafe.Pointer(cpool))
	if err := check(C.rados_ioctx_create(cluster, cpool, &io), "open pool "+pool); err != nil {
		return nil, err
	}
	r.ioctxs[pool] = io
	return io, nil
}

// Close shuts the cluster connection down.
func (r *Rbd) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, io := range r.ioctxs {
		C.rados_ioctx_destroy(io)
	}
	r.ioctxs = map[string]C.rados_ioctx_t{}
	if r.cluster != nil {
		C.rados_shutdown(r.cluster)
		r.cluster = nil
	}
}

func (r *Rbd) withImage(pool, name string, readOnly bool, op string, fn func(C.rbd_image_t) error) error {
	io, err := r.ioctx(pool)
	if err != nil {
		return err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var image C.rbd_image_t
	if readOnly {
		err = check(C.rbd_open_read_only(io, cname, &image, nil), fmt.Sprintf("%s %s/%s", op, pool, name))
	} else {
		err = check(C.rbd_open(io, cname, &image, nil), fmt.Sprintf("%s %s/%s", op, pool, name))
	}
	if err != nil {
		return err
	}
	defer C.rbd_close(image)
	return fn(image)
}

// Status reads size, owner mark and watchers from one open; nil when the image does not exist.
func (r *Rbd) Status(pool, name string) (*ImageStatus, error) {
	var st ImageStatus
	op := fmt.Sprintf("status of %s/%s", pool, name)
	err := r.withImage(pool, name, true, "status of", func(image C.rbd_image_t) error {
		var info C.rbd_image_info_t
		if err := check(C.rbd_stat(image, &info, C.size_t(unsafe.Sizeof(info))), op); err != nil {
			return err
		}
		st.Size = uint64(info.size)
		owner, err := metadataGet(image, ownerKey, op)
		if err != nil {
			return err
		}
		st.Owner = owner
		n, err := watcherCount(image, r.instanceID(), op)
		st.Watchers = n
		return err
	})
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

func metadataGet(image C.rbd_image_t, key, op string) (string, error) {
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	size := C.size_t(128)
	for attempt := 0; attempt < 4; attempt++ {
		buf := (*C.char)(C.malloc(size))
		n := size
		rc := C.rbd_metadata_get(image, ckey, buf, &n)
		if rc == -C.ENOENT {
			C.free(unsafe.Pointer(buf))
			return "", nil
		}
		if rc == -C.ERANGE {
			C.free(unsafe.Pointer(buf))
			size = max(n, size*2)
			continue
		}
		if err := check(rc, op); err != nil {
			C.free(unsafe.Pointer(buf))
			return "", err
		}
		value := C.GoString(buf) // NUL-terminated
		C.free(unsafe.Pointer(buf))
		return value, nil
	}
	return "", &RbdError{Op: op, Errno: syscall.ERANGE}
}

// instanceID is this client's id, as a watcher of an image it has open would show it.
func (r *Rbd) instanceID() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cluster == nil {
		return -1
	}
	return int64(C.rados_get_instance_id(r.cluster))
}

// watcherCount: clients other than this one that have the image open (the TypeScript agent's filter).
func watcherCount(image C.rbd_image_t, self int64, op string) (int, error) {
	limit := C.size_t(8)
	for attempt := 0; attempt < 8; attempt++ {
		buf := (*C.rbd_image_watcher_t)(C.calloc(limit, C.size_t(unsafe.Sizeof(C.rbd_image_watcher_t{}))))
		n := limit
		rc := C.rbd_watchers_list(image, buf, &n)
		if rc == -C.ERANGE && n > limit {
			C.free(unsafe.Pointer(buf))
			limit = n
			continue
		}
		if err := check(rc, op); err != nil {
			C.free(unsafe.Pointer(buf))
			return 0, err
		}
		others := 0
		for _, w := range unsafe.Slice(buf, int(n)) {
			if int64(w.id) != self {
				others++
			}
		}
		C.rbd_watchers_list_cleanup(buf, n)
		C.free(unsafe.Pointer(buf))
		return others, nil
	}
	return 0, &RbdError{Op: op, Errno: syscall.ERANGE}
}

// Create makes an empty format 2 image.
func (r *Rbd) Create(pool, name string, size uint64) error {
	r.metrics.hostMutation("rbd", "create")
	io, err := r.ioctx(pool)
	if err != nil {
		return err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	order := C.int(0)
	return check(C.rbd_create2(io, cname, C.uint64_t(size), rbdFeatures, &order), fmt.Sprintf("create %s/%s", pool, name))
}

// SetOwner writes the owner mark (image metadata).
func (r *Rbd) SetOwner(pool, name, uid string) error {
	r.metrics.hostMutation("rbd", "setOwner")
	op := fmt.Sprintf("mark %s/%s", pool, name)
	return r.withImage(pool, name, false, "mark", func(image C.rbd_image_t) error {
		ckey, cval := C.CString(ownerKey), C.CString(uid)
		defer C.free(unsafe.Pointer(ckey))
		defer C.free(unsafe.Pointer(cval))
		return check(C.rbd_metadata_set(image, ckey, cval), op)
	})
}

// Rename gives an image another name in its pool.
func (r *Rbd) Rename(pool, from, to string) error {
	r.metrics.hostMutation("rbd", "rename")
	io, err := r.ioctx(pool)
	if err != nil {
		return err
	}
	cfrom, cto := C.CString(from), C.CString(to)
	defer C.free(unsafe.Pointer(cfrom))
	defer C.free(unsafe.Pointer(cto))
	return check(C.rbd_rename(io, cfrom, cto), fmt.Sprintf("rename %s/%s to %s", pool, from, to))
}

// Grow resizes an image up; a smaller size is refused (a shrink loses data).
func (r *Rbd) Grow(pool, name string, size uint64) error {
	r.metrics.hostMutation("rbd", "grow")
	op := fmt.Sprintf("grow %s/%s", pool, name)
	return r.withImage(pool, name, false, "grow", func(image C.rbd_image_t) error {
		var current C.uint64_t
		if err := check(C.rbd_get_size(image, &current), op); err != nil {
			return err
		}
		if uint64(current) > size {
			return &RbdError{Op: op + " (refusing to shrink)", Errno: syscall.EINVAL}
		}
		if uint64(current) == size {
			return nil
		}
		return check(C.rbd_resize(image, C.uint64_t(size)), op)
	})
}

// Remove deletes an image; librbd itself refuses (EBUSY) while a client has it open.
func (r *Rbd) Remove(pool, name string) error {
	r.metrics.hostMutation("rbd", "remove")
	io, err := r.ioctx(pool)
	if err != nil {
		return err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return check(C.rbd_remove(io, cname), fmt.Sprintf("remove %s/%s", pool, name))
}
