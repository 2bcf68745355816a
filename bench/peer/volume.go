package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	kaktus "kaktus.kowabunga.cloud/bench-peer/api/v1alpha1"
)

const (
	volumeFinalizer = "kaktus.kowabunga.cloud/volume"
	adoptAnnotation = "kaktus.kowabunga.cloud/adopt"
	retryIn         = 10 * time.Second
)

// VolumeReconciler (leader only): the RBD image <namespace>.<name> exists in spec.pool with at
// least spec.size bytes and the Volume's owner mark; deletion honours reclaimPolicy and waits while
// a VirtualMachine references the Volume. Empty images only: spec.source is reported unsupported.
type VolumeReconciler struct {
	client.Client
	Rbd    *Rbd
	Pools  []string
	Resync time.Duration
	Events recorder.EventRecorder
}

func volumeImage(v *kaktus.Volume) string { return v.Namespace + "." + v.Name }
func partialImage(image string) string    { return image + ".partial" }

func (r *VolumeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var vol kaktus.Volume
	if err := r.Get(ctx, req.NamespacedName, &vol); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	users, err := r.usersOf(ctx, &vol)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !vol.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(&vol, volumeFinalizer) {
			return ctrl.Result{}, nil
		}
		orig := vol.DeepCopy()
		vol.Status.InUseBy = users
		return r.cleanup(ctx, orig, &vol)
	}
	if err := addFinalizer(ctx, r.Client, &vol, volumeFinalizer); err != nil {
		return ctrl.Result{}, err
	}
	orig := vol.DeepCopy()
	vol.Status.InUseBy = users

	res, err := r.apply(ctx, &vol)
	if err != nil {
		// The error policy: Synced/Ready False with the host's reason, phase Failed, a Warning Event.
		reason := "CephError"
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			reason = "AccessDenied"
		}
		setConditions(&vol.Status.Conditions, vol.Generation,
			cond{"Synced", "False", reason, err.Error()}, cond{"Ready", "False", reason, err.Error()})
		vol.Status.Phase = "Failed"
		r.Events.Eventf(&vol, nil, corev1.EventTypeWarning, reason, "Reconcile", "%s", err.Error())
	}
	vol.Status.ObservedGeneration = vol.Generation
	if perr := patchStatus(ctx, r.Client, orig, &vol, func(v *kaktus.Volume) any { return v.Status }); perr != nil {
		return ctrl.Result{}, errors.Join(err, perr)
	}
	return res, err
}

func (r *VolumeReconciler) apply(ctx context.Context, vol *kaktus.Volume) (ctrl.Result, error) {
	pool, image := vol.Spec.Pool, volumeImage(vol)
	refuse := func(reason, message string) (ctrl.Result, error) {
		vol.Status.Phase = "Failed"
		setConditions(&vol.Status.Conditions, vol.Generation,
			cond{"Synced", "False", reason, message}, cond{"Ready", "False", reason, message})
		r.Events.Eventf(vol, nil, corev1.EventTypeWarning, reason, "Reconcile", "%s", message)
		return ctrl.Result{}, nil // nothing to retry until the object changes
	}
	if !slices.Contains(r.Pools, pool) {
		return refuse("PoolNotAllowed", fmt.Sprintf("pool %s is not one Volumes may use (%v)", pool, r.Pools))
	}
	if vol.Spec.Source != nil {
		return refuse("Unsupported", "the benchmark peer makes empty images only (spec.source is not supported)")
	}
	size, err := bytesOf(vol.Spec.Size)
	if err != nil {
		return refuse("InvalidSpec", err.Error())
	}
	uid := string(vol.UID)
	st, err := r.Rbd.Status(pool, image)
	if err != nil {
		return ctrl.Result{}, err
	}
	if st == nil {
		// Built under a temporary name, marked, then renamed: an interrupted build is never taken
		// for a finished one (the TypeScript agent's sequence).
		partial := partialImage(image)
		if old, err := r.Rbd.Status(pool, partial); err != nil {
			return ctrl.Result{}, err
		} else if old != nil {
			if err := r.Rbd.Remove(pool, partial); err != nil {
				return ctrl.Result{}, err
			}
		}
		if err := r.Rbd.Create(pool, partial, size); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Rbd.SetOwner(pool, partial, uid); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Rbd.Rename(pool, partial, image); err != nil {
			return ctrl.Result{}, err
		}
		r.Events.Eventf(vol, nil, corev1.EventTypeNormal, "Created", "Create", "created RBD image %s/%s", pool, image)
		if st, err = r.Rbd.Status(pool, image); err != nil || st == nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("image %s/%s vanished after creation", pool, image))
		}
	} else if st.Owner != uid {
		if vol.Annotations[adoptAnnotation] != "true" {
			return refuse("NotOwned", fmt.Sprintf("rbd image %s/%s exists and was not made for this Volume (owner mark: %q); it is left untouched", pool, image, st.Owner))
		}
		if err := r.Rbd.SetOwner(pool, image, uid); err != nil {
			return ctrl.Result{}, err
		}
		r.Events.Eventf(vol, nil, corev1.EventTypeNormal, "Adopted", "Adopt", "adopted RBD image %s/%s", pool, image)
	}
	if st.Size < size && st.Watchers == 0 {
		if err := r.Rbd.Grow(pool, image, size); err != nil {
			return ctrl.Result{}, err
		}
		r.Events.Eventf(vol, nil, corev1.EventTypeNormal, "Resized", "Resize", "grew %s/%s to %s", pool, image, formatBytes(size).String())
		if st, err = r.Rbd.Status(pool, image); err != nil || st == nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("image %s/%s vanished after resize", pool, image))
		}
	}
	growing := st.Size < size
	vol.Status.Image = pool + "/" + image
	vol.Status.Capacity = formatBytes(st.Size)
	vol.Status.Watchers = int32p(int32(st.Watchers))
	if growing {
		vol.Status.Phase = "Creating"
		setConditions(&vol.Status.Conditions, vol.Generation,
			cond{"Ready", "False", "WaitingForResize", "the VM using this Volume grows it live"}, cond{"Synced", "True", "Synced", ""})
		return ctrl.Result{RequeueAfter: retryIn}, nil
	}
	vol.Status.Phase = "Ready"
	setConditions(&vol.Status.Conditions, vol.Generation, cond{"Ready", "True", "ImageReady", ""}, cond{"Synced", "True", "Synced", ""})
	return ctrl.Result{RequeueAfter: r.Resync}, nil
}

// cleanup: Retain keeps the image; an image not made for this Volume stays; otherwise it goes once
// no VirtualMachine references the Volume and no client has the image open. Then the finalizer.
func (r *VolumeReconciler) cleanup(ctx context.Context, orig, vol *kaktus.Volume) (ctrl.Result, error) {
	pool, image := vol.Spec.Pool, volumeImage(vol)
	vol.Status.Phase = "Terminating"
	wait := func(reason, message string) (ctrl.Result, error) {
		setConditions(&vol.Status.Conditions, vol.Generation, cond{"Ready", "False", reason, message})
		r.Events.Eventf(vol, nil, corev1.EventTypeWarning, reason, "Delete", "not deleting: %s", message)
		return ctrl.Result{RequeueAfter: retryIn}, patchStatus(ctx, r.Client, orig, vol, func(v *kaktus.Volume) any { return v.Status })
	}
	if vol.Spec.ReclaimPolicy != "Retain" {
		st, err := r.Rbd.Status(pool, image)
		if err != nil {
			return ctrl.Result{}, err
		}
		switch {
		case st != nil && st.Owner != string(vol.UID):
			r.Events.Eventf(vol, nil, corev1.EventTypeNormal, "NotOwned", "Delete", "left RBD image %s/%s: not made for this Volume", pool, image)
		case len(vol.Status.InUseBy) > 0:
			return wait("InUse", fmt.Sprintf("still used by VirtualMachine %v", vol.Status.InUseBy))
		case st != nil && st.Watchers > 0:
			return wait("ImageInUse", fmt.Sprintf("%s/%s is open by %d client(s)", pool, image, st.Watchers))
		case st != nil:
			if err := r.Rbd.Remove(pool, image); err != nil {
				return ctrl.Result{}, err
			}
			r.Events.Eventf(vol, nil, corev1.EventTypeNormal, "Deleted", "Delete", "removed RBD image %s/%s", pool, image)
		}
	} else {
		r.Events.Eventf(vol, nil, corev1.EventTypeNormal, "Retained", "Delete", "kept RBD image %s/%s (reclaimPolicy Retain)", pool, image)
	}
	if partial, err := r.Rbd.Status(pool, partialImage(image)); err != nil {
		return ctrl.Result{}, err
	} else if partial != nil {
		if err := r.Rbd.Remove(pool, partialImage(image)); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := patchStatus(ctx, r.Client, orig, vol, func(v *kaktus.Volume) any { return v.Status }); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, client.IgnoreNotFound(removeFinalizer(ctx, r.Client, vol, volumeFinalizer))
}

// usersOf: names of the VirtualMachines of the namespace whose disks reference the Volume.
func (r *VolumeReconciler) usersOf(ctx context.Context, vol *kaktus.Volume) ([]string, error) {
	var vms kaktus.VirtualMachineList
	if err := r.List(ctx, &vms, client.InNamespace(vol.Namespace), client.MatchingFields{indexVolumeRef: vol.Name}); err != nil {
		return nil, err
	}
	var names []string
	for _, vm := range vms.Items {
		names = append(names, vm.Name)
	}
	sort.Strings(names)
	return names, nil
}

func (r *VolumeReconciler) SetupWithManager(mgr ctrl.Manager, workers int, m *Metrics) error {
	// Which VMs reference a Volume is in its status and holds its deletion.
	volumesOfVM := enqueueRefs(func(vm *kaktus.VirtualMachine) []reconcile.Request {
		var reqs []reconcile.Request
		for _, d := range vm.Spec.Disks {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: d.VolumeRef}})
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("volume").
		For(&kaktus.Volume{}, builder.WithPredicates(specOrMetaChanged())).
		Watches(&kaktus.VirtualMachine{}, volumesOfVM, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return !slices.Equal(volumeRefs(e.ObjectOld.(*kaktus.VirtualMachine)), volumeRefs(e.ObjectNew.(*kaktus.VirtualMachine)))
			},
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers, ReconciliationTimeout: reconcileTimeout}).
		Complete(m.timed("volume", r))
}

func volumeRefs(vm *kaktus.VirtualMachine) []string {
	refs := make([]string, 0, len(vm.Spec.Disks))
	for _, d := range vm.Spec.Disks {
		refs = append(refs, d.VolumeRef)
	}
	return refs
}
