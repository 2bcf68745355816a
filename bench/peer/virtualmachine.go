package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"libvirt.org/go/libvirtxml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kaktus "kaktus.kowabunga.cloud/bench-peer/api/v1alpha1"
)

const (
	vmFinalizer       = "kaktus.kowabunga.cloud/virtualmachine"
	indexVolumeRef    = "spec.disks.volumeRef"
	indexBridgeRef    = "spec.interfaces.bridgeRef"
	dependencyRetry   = 15 * time.Second
	shutdownPoll      = time.Second
	reconcileTimeout  = 120 * time.Second
	shutoffByGuest    = 1
	shutoffDestroyed  = 2
	defaultGraceSecs  = 60
	defaultRunOnStart = "Always"
)

// domainName: libvirt domain names are per node; "_" cannot occur in namespace or object names.
func domainName(namespace, name string) string { return namespace + "_" + name }

var domainKeyRe = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)_([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$`)

// VMReconciler (the peer of spec.node): the VM's persistent libvirt domain exists with the
// desired definition (RBD disks, bridged NICs), autostart and power state; Volumes are claimed
// (status.attachedTo) before the domain uses them; dependencies not Ready yet are waited for.
type VMReconciler struct {
	client.Client
	Node       string
	HV         *Hypervisor
	DomainType string // kvm or qemu
	CPUMode    string // the node's default CPU for VMs that name none
	Resync     time.Duration
	Events     recorder.EventRecorder
}

type unready struct{ reason, message string }

type vmFailure struct {
	reason   string
	terminal bool
	err      error
}

func (f *vmFailure) Error() string { return f.err.Error() }
func (f *vmFailure) Unwrap() error { return f.err }

func (r *VMReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var vm kaktus.VirtualMachine
	if err := r.Get(ctx, req.NamespacedName, &vm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if vm.Spec.Node != r.Node {
		return ctrl.Result{}, nil
	}
	if !vm.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(&vm, vmFinalizer) {
			return ctrl.Result{}, nil
		}
		return r.cleanup(ctx, &vm)
	}
	if err := addFinalizer(ctx, r.Client, &vm, vmFinalizer); err != nil {
		return ctrl.Result{}, err
	}
	orig := vm.DeepCopy()
	res, err := r.apply(ctx, &vm, orig)
	if err != nil {
		// The error policy: Synced/Ready False with the reason, phase Failed, a Warning Event;
		// bad input is terminal (no retry until the object changes), the host failing is retried.
		var f *vmFailure
		if !errors.As(err, &f) {
			f = &vmFailure{reason: "LibvirtError", err: err}
			if errors.Is(err, errNotConnected) {
				f.reason = "LibvirtUnavailable"
			}
		}
		setConditions(&vm.Status.Conditions, vm.Generation,
			cond{"Synced", "False", f.reason, err.Error()}, cond{"Ready", "False", f.reason, err.Error()})
		vm.Status.Phase = "Failed"
		r.Events.Eventf(&vm, nil, corev1.EventTypeWarning, f.reason, "Reconcile", "%s", err.Error())
		if f.terminal {
			err = reconcile.TerminalError(err)
		}
	}
	vm.Status.ObservedGeneration = vm.Generation
	if perr := patchStatus(ctx, r.Client, orig, &vm, func(v *kaktus.VirtualMachine) any { return v.Status }); perr != nil {
		return ctrl.Result{}, errors.Join(err, perr)
	}
	return res, err
}

func (r *VMReconciler) apply(ctx context.Context, vm *kaktus.VirtualMachine, orig *kaktus.VirtualMachine) (ctrl.Result, error) {
	name := domainName(vm.Namespace, vm.Name)
	found, err := r.HV.lookup(name)
	if err != nil {
		return ctrl.Result{}, err
	}
	// Only a domain made for this very object is touched: not one made by hand, nor an earlier object's.
	if found != nil && found.Owner == nil {
		return ctrl.Result{}, &vmFailure{reason: "NotOwned", terminal: true,
			err: fmt.Errorf("domain %s on %s was not made by the operator: left untouched", name, r.Node)}
	}
	if found != nil && found.Owner.UID != string(vm.UID) {
		if err := r.removeDomain(found); err != nil {
			return ctrl.Result{}, err
		}
		r.Events.Eventf(vm, nil, corev1.EventTypeWarning, "OrphanRemoved", "Delete",
			"removed domain %s from %s: it was made for an earlier object (uid %s)", name, r.Node, found.Owner.UID)
		return ctrl.Result{RequeueAfter: time.Millisecond}, nil
	}

	volumes, bridges, waiting, err := r.dependencies(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(waiting) > 0 {
		r.status(vm, waiting, nil, activeOf(found), nil)
		return ctrl.Result{RequeueAfter: dependencyRetry}, nil
	}
	// Claims, then identity, both persisted before the domain exists.
	for _, v := range volumes {
		if err := r.claim(ctx, v, vm); err != nil {
			return ctrl.Result{}, err
		}
	}
	if r.identity(vm, found) {
		if err := patchStatus(ctx, r.Client, orig, vm, func(v *kaktus.VirtualMachine) any { return v.Status }); err != nil {
			return ctrl.Result{}, err
		}
		*orig = *vm.DeepCopy()
	}
	desired, err := r.desired(vm, volumes, bridges)
	if err != nil {
		return ctrl.Result{}, err
	}
	xmlText, err := domainXML(desired, r.HV.ceph)
	if err != nil {
		return ctrl.Result{}, &vmFailure{reason: "InvalidSpec", terminal: true, err: err}
	}
	var restart []string
	defined := false
	if found == nil {
		if err := r.HV.define(xmlText); err != nil {
			return ctrl.Result{}, defineFailure(err)
		}
		defined = true
		event := corev1.EventTypeNormal
		reason, msg := "Defined", fmt.Sprintf("defined domain %s on %s", name, r.Node)
		if vm.Status.Phase == "Running" || vm.Status.Phase == "Stopped" {
			event, reason, msg = corev1.EventTypeWarning, "DomainRecreated", fmt.Sprintf("domain %s had vanished from %s; defined it again", name, r.Node)
		}
		r.Events.Eventf(vm, nil, event, reason, "Define", "%s", msg)
	} else if drift := drifted(desired, found.Definition); len(drift) > 0 {
		if err := r.HV.define(xmlText); err != nil {
			return ctrl.Result{}, defineFailure(err)
		}
		defined = true
		if vm.Status.ObservedGeneration == vm.Generation {
			r.Events.Eventf(vm, nil, corev1.EventTypeWarning, "DefinitionDrift", "Define",
				"domain definition was changed behind the operator: reverted %s", strings.Join(drift, ", "))
		} else {
			r.Events.Eventf(vm, nil, corev1.EventTypeNormal, "Updated", "Define", "updated the domain definition: %s", strings.Join(drift, ", "))
		}
		if found.Active {
			restart = drift
		}
	}
	if defined {
		if found, err = r.HV.lookup(name); err != nil || found == nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("domain %s vanished after define", name))
		}
	}
	wantAutostart := vm.Spec.Autostart == nil || *vm.Spec.Autostart
	if found.Autostart != wantAutostart {
		if err := r.HV.setAutostart(found, wantAutostart); err != nil {
			return ctrl.Result{}, err
		}
	}
	ready, active, poll, err := r.power(vm, found)
	if err != nil {
		return ctrl.Result{}, err
	}
	if restart == nil {
		restart = []string{}
	}
	r.status(vm, nil, &ready, &active, restart)
	if poll > 0 {
		return ctrl.Result{RequeueAfter: poll}, nil
	}
	return ctrl.Result{RequeueAfter: r.Resync}, nil
}

func defineFailure(err error) error {
	var le libvirt.Error
	if errors.As(err, &le) && (le.Code == uint32(libvirt.ErrXMLError) || le.Code == uint32(libvirt.ErrConfigUnsupported) ||
		le.Code == uint32(libvirt.ErrInvalidArg)) {
		return &vmFailure{reason: "InvalidDomain", terminal: true, err: err}
	}
	return err
}

func activeOf(d *DomainInfo) *bool {
	if d == nil {
		return nil
	}
	return ptr.To(d.Active)
}

// power: the state runStrategy asks for, one step at a time (graceful shutdown polls every second).
func (r *VMReconciler) power(vm *kaktus.VirtualMachine, d *DomainInfo) (ready cond, active bool, poll time.Duration, err error) {
	strategy := vm.Spec.RunStrategy
	if strategy == "" {
		strategy = defaultRunOnStart
	}
	if strategy == "Halted" {
		return r.stop(vm, d)
	}
	vm.Status.ShutdownDeadline = nil
	if d.Active {
		return cond{"Ready", "True", "Running", "running on " + r.Node}, true, 0, nil
	}
	if strategy == "Manual" || (strategy == "RerunOnFailure" && d.Reason == shutoffByGuest) {
		return cond{"Ready", "True", "Stopped", "stopped (runStrategy " + strategy + ")"}, false, 0, nil
	}
	if err := r.HV.start(d); err != nil {
		return cond{}, false, 0, &vmFailure{reason: "StartFailed", err: err}
	}
	reason, msg := "Started", "started domain "+d.dom.Name
	if vm.Status.Phase == "Running" {
		reason, msg = "Restarted", fmt.Sprintf("domain %s was found stopped; started it again", d.dom.Name)
	}
	r.Events.Eventf(vm, nil, corev1.EventTypeNormal, reason, "Start", "%s", msg)
	return cond{"Ready", "True", "Running", "running on " + r.Node}, true, 0, nil
}

// stop: ACPI shutdown, then destroy once the grace period is over (deadline kept in status).
func (r *VMReconciler) stop(vm *kaktus.VirtualMachine, d *DomainInfo) (cond, bool, time.Duration, error) {
	grace := int32(defaultGraceSecs)
	if vm.Spec.ShutdownGracePeriodSeconds != nil {
		grace = *vm.Spec.ShutdownGracePeriodSeconds
	}
	if d == nil || !d.Active {
		vm.Status.ShutdownDeadline = nil
		if d != nil && d.Reason == shutoffDestroyed {
			return cond{"Ready", "True", "Destroyed", fmt.Sprintf("the guest was destroyed (did not shut down within %d s after ACPI, or powered off from outside)", grace)}, false, 0, nil
		}
		return cond{"Ready", "True", "Stopped", "stopped"}, false, 0, nil
	}
	now := time.Now()
	if vm.Status.ShutdownDeadline == nil {
		if err := r.HV.shutdown(d); err != nil {
			return cond{}, true, 0, err
		}
		vm.Status.ShutdownDeadline = &metav1.Time{Time: now.Add(time.Duration(grace) * time.Second)}
		r.Events.Eventf(vm, nil, corev1.EventTypeNormal, "ShuttingDown", "Stop", "sent ACPI shutdown to %s; destroy in %d s", d.dom.Name, grace)
		return cond{"Ready", "False", "ShuttingDown", fmt.Sprintf("waiting for the guest to power off (%d s left)", grace)}, true, shutdownPoll, nil
	}
	if !now.Before(vm.Status.ShutdownDeadline.Time) {
		if err := r.HV.destroy(d); err != nil {
			return cond{}, true, 0, err
		}
		vm.Status.ShutdownDeadline = nil
		msg := fmt.Sprintf("the guest did not shut down within %d s after ACPI; destroyed it", grace)
		r.Events.Eventf(vm, nil, corev1.EventTypeWarning, "Destroyed", "Stop", "%s", msg)
		return cond{"Ready", "True", "Destroyed", msg}, false, 0, nil
	}
	left := int(vm.Status.ShutdownDeadline.Sub(now).Seconds() + 0.999)
	return cond{"Ready", "False", "ShuttingDown", fmt.Sprintf("waiting for the guest to power off (%d s left)", left)}, true, shutdownPoll, nil
}

// status: phase and conditions as the TypeScript agent's vmStatus computes them.
func (r *VMReconciler) status(vm *kaktus.VirtualMachine, waiting []unready, ready *cond, active *bool, restart []string) {
	s := &vm.Status
	s.Node = r.Node
	gen := vm.Generation
	var why []string
	dependencies := "Waiting"
	for _, w := range waiting {
		why = append(why, w.message)
		if w.reason == "VolumeInUse" {
			dependencies = "VolumeInUse"
		}
	}
	if len(waiting) > 0 {
		ready = &cond{"Ready", "False", "WaitingForDependencies", strings.Join(why, "; ")}
		setConditions(&s.Conditions, gen, cond{"DependenciesReady", "False", dependencies, strings.Join(why, "; ")})
	} else {
		setConditions(&s.Conditions, gen, cond{"DependenciesReady", "True", "AllReady", ""})
	}
	if ready != nil {
		setConditions(&s.Conditions, gen, *ready)
	}
	if len(waiting) == 0 {
		setConditions(&s.Conditions, gen, cond{"Synced", "True", "Synced", ""})
	}
	if restart != nil {
		if len(restart) > 0 {
			setConditions(&s.Conditions, gen, cond{"RestartRequired", "True", "PendingChanges", "applied after the next restart: " + strings.Join(restart, ", ")})
		} else {
			setConditions(&s.Conditions, gen, cond{"RestartRequired", "False", "UpToDate", ""})
		}
	}
	switch {
	case ready != nil && ready.Reason == "StartFailed":
		s.Phase = "Failed"
	case active != nil && *active:
		s.Phase = "Running"
	case active != nil:
		s.Phase = "Stopped"
	case len(waiting) > 0:
		s.Phase = "Pending"
	default:
		s.Phase = "Provisioning"
	}
}

// dependencies: the VM's Volumes and Bridges from the cache, and those not Ready for it yet.
func (r *VMReconciler) dependencies(ctx context.Context, vm *kaktus.VirtualMachine) (map[string]*kaktus.Volume, map[string]*kaktus.Bridge, []unready, error) {
	volumes := map[string]*kaktus.Volume{}
	bridges := map[string]*kaktus.Bridge{}
	var waits []unready
	wait := func(format string, args ...any) {
		waits = append(waits, unready{"Waiting", fmt.Sprintf(format, args...)})
	}
	for _, d := range vm.Spec.Disks {
		var v kaktus.Volume
		err := r.Get(ctx, types.NamespacedName{Namespace: vm.Namespace, Name: d.VolumeRef}, &v)
		if client.IgnoreNotFound(err) != nil {
			return nil, nil, nil, err
		}
		readyCond := meta.FindStatusCondition(v.Status.Conditions, "Ready")
		switch {
		case err != nil:
			wait("Volume %s does not exist", d.VolumeRef)
		case !v.DeletionTimestamp.IsZero():
			wait("Volume %s is being deleted", d.VolumeRef)
		case v.Status.AttachedTo != nil && v.Status.AttachedTo.UID != string(vm.UID):
			waits = append(waits, unready{"VolumeInUse", fmt.Sprintf("Volume %s is attached to VirtualMachine %s (on %s)",
				d.VolumeRef, v.Status.AttachedTo.Name, v.Status.AttachedTo.Node)})
		case readyCond == nil || (readyCond.Status != metav1.ConditionTrue && readyCond.Reason != "WaitingForResize"):
			msg := ""
			if readyCond != nil && readyCond.Message != "" {
				msg = ": " + readyCond.Message
			}
			wait("Volume %s is not Ready%s", d.VolumeRef, msg)
		default:
			volumes[d.VolumeRef] = &v
		}
	}
	for _, i := range vm.Spec.Interfaces {
		var b kaktus.Bridge
		err := r.Get(ctx, types.NamespacedName{Name: i.BridgeRef}, &b)
		if client.IgnoreNotFound(err) != nil {
			return nil, nil, nil, err
		}
		if err != nil {
			wait("Bridge %s does not exist", i.BridgeRef)
			continue
		}
		readyHere := false
		for _, n := range b.Status.Nodes {
			if n.Node == r.Node {
				readyHere = n.Ready
			}
		}
		if !readyHere {
			wait("Bridge %s is not Ready on %s", i.BridgeRef, r.Node)
			continue
		}
		bridges[i.BridgeRef] = &b
	}
	return volumes, bridges, waits, nil
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// claim: status.attachedTo names this VM, written with a patch guarded by the resourceVersion
// read, so of two VMs racing for one Volume exactly one wins.
func (r *VMReconciler) claim(ctx context.Context, v *kaktus.Volume, vm *kaktus.VirtualMachine) error {
	if v.Status.AttachedTo != nil && v.Status.AttachedTo.UID == string(vm.UID) {
		return nil
	}
	ops := []jsonPatchOp{
		{Op: "test", Path: "/metadata/resourceVersion", Value: v.ResourceVersion},
		{Op: "add", Path: "/status/attachedTo", Value: kaktus.VolumeClaim{Name: vm.Name, UID: string(vm.UID), Node: r.Node}},
	}
	data, _ := json.Marshal(ops)
	return r.Status().Patch(ctx, v, client.RawPatch(types.JSONPatchType, data))
}

// release: the claims this VM holds go (guarded by the holder's UID).
func (r *VMReconciler) release(ctx context.Context, vm *kaktus.VirtualMachine) error {
	var list kaktus.VolumeList
	if err := r.List(ctx, &list, client.InNamespace(vm.Namespace)); err != nil {
		return err
	}
	for i := range list.Items {
		v := &list.Items[i]
		if v.Status.AttachedTo == nil || v.Status.AttachedTo.UID != string(vm.UID) {
			continue
		}
		data, _ := json.Marshal([]jsonPatchOp{
			{Op: "test", Path: "/status/attachedTo/uid", Value: string(vm.UID)},
			{Op: "remove", Path: "/status/attachedTo"},
		})
		if err := r.Status().Patch(ctx, v, client.RawPatch(types.JSONPatchType, data)); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// identity: UUID and MACs from status when known, else from the domain found, else generated;
// never changed after. Returns whether status changed (it is then written before the define).
func (r *VMReconciler) identity(vm *kaktus.VirtualMachine, found *DomainInfo) bool {
	s := &vm.Status
	before := s.DeepCopy()
	if s.DomainUUID == "" {
		if found != nil {
			s.DomainUUID = found.UUID
		} else {
			s.DomainUUID = uuid.NewString()
		}
	}
	var nics []kaktus.InterfaceStatus
	for _, i := range vm.Spec.Interfaces {
		mac := i.MAC
		if mac == "" {
			for _, known := range before.Interfaces {
				if known.Name == i.Name {
					mac = known.MAC
				}
			}
		}
		if mac == "" {
			b := make([]byte, 3)
			_, _ = rand.Read(b)
			mac = fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
		}
		nics = append(nics, kaktus.InterfaceStatus{Name: i.Name, MAC: strings.ToLower(mac), Bridge: i.BridgeRef})
	}
	s.Interfaces = nics
	return !equality.Semantic.DeepEqual(before.DomainUUID, s.DomainUUID) || !equality.Semantic.DeepEqual(before.Interfaces, s.Interfaces)
}

// desired: the domain the VM asks for on this node (cloudInit is not part of the peer).
func (r *VMReconciler) desired(vm *kaktus.VirtualMachine, volumes map[string]*kaktus.Volume, bridges map[string]*kaktus.Bridge) (DesiredDomain, error) {
	mem, err := bytesOf(vm.Spec.Memory)
	if err != nil {
		return DesiredDomain{}, &vmFailure{reason: "InvalidSpec", terminal: true, err: err}
	}
	d := DesiredDomain{
		Name: domainName(vm.Namespace, vm.Name), UUID: vm.Status.DomainUUID, Type: r.DomainType,
		Owner:     DomainOwner{Namespace: vm.Namespace, Name: vm.Name, UID: string(vm.UID)},
		MemoryKiB: uint((mem + 1023) / 1024), VCPUs: 1, CPUMode: r.CPUMode,
		Firmware: orDefault(vm.Spec.Firmware, "bios"), Graphics: orDefault(vm.Spec.Graphics, "spice"),
		SecureBoot: vm.Spec.SecureBoot != nil && *vm.Spec.SecureBoot,
	}
	if c := vm.Spec.CPU; c != nil {
		if c.Cores != nil {
			d.VCPUs = uint(*c.Cores)
		}
		switch c.Model {
		case "":
		case "host-passthrough", "host-model":
			if r.DomainType != "kvm" {
				return d, &vmFailure{reason: "Unsupported", terminal: true,
					err: fmt.Errorf("cpu.model %s needs KVM, and this node runs VMs under TCG (no usable KVM)", c.Model)}
			}
			d.CPUMode = c.Model
		default:
			d.CPUMode, d.CPUModel = "custom", c.Model
		}
		for _, f := range c.Features {
			d.CPUFeatures = append(d.CPUFeatures, libvirtxml.DomainCPUFeature{Policy: orDefault(f.Policy, "require"), Name: f.Name})
		}
	}
	for _, disk := range vm.Spec.Disks {
		v := volumes[disk.VolumeRef]
		dd := DesiredDisk{Name: disk.Name, Pool: v.Spec.Pool, Image: volumeImage(v), Bus: orDefault(disk.Bus, "virtio"),
			ReadOnly: disk.ReadOnly != nil && *disk.ReadOnly}
		if disk.BootOrder != nil {
			dd.BootOrder = uint(*disk.BootOrder)
		}
		d.Disks = append(d.Disks, dd)
	}
	for _, i := range vm.Spec.Interfaces {
		mac := ""
		for _, s := range vm.Status.Interfaces {
			if s.Name == i.Name {
				mac = s.MAC
			}
		}
		d.NICs = append(d.NICs, DesiredNIC{Name: i.Name, MAC: mac, Bridge: bridges[i.BridgeRef].IfName(), Model: orDefault(i.Model, "virtio")})
	}
	return d, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// removeDomain: stop at once and undefine (an orphan, or the VM's own domain after its grace).
func (r *VMReconciler) removeDomain(d *DomainInfo) error {
	if d.Active {
		if err := r.HV.destroy(d); err != nil {
			return err
		}
	}
	return r.HV.undefine(d)
}

// cleanup: stop gracefully (ACPI, destroy after the grace period), undefine, release claims,
// then the finalizer. The disks are Volumes and are not touched here.
func (r *VMReconciler) cleanup(ctx context.Context, vm *kaktus.VirtualMachine) (ctrl.Result, error) {
	orig := vm.DeepCopy()
	name := domainName(vm.Namespace, vm.Name)
	found, err := r.HV.lookup(name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if found != nil && found.Owner != nil && found.Owner.UID == string(vm.UID) {
		if found.Active {
			ready, active, poll, err := r.stop(vm, found)
			if err != nil {
				return ctrl.Result{}, err
			}
			if active {
				vm.Status.Phase = "Terminating"
				setConditions(&vm.Status.Conditions, vm.Generation, ready)
				return ctrl.Result{RequeueAfter: poll}, patchStatus(ctx, r.Client, orig, vm, func(v *kaktus.VirtualMachine) any { return v.Status })
			}
		}
		if err := r.HV.undefine(found); err != nil {
			return ctrl.Result{}, err
		}
		r.Events.Eventf(vm, nil, corev1.EventTypeNormal, "Deleted", "Delete", "undefined domain %s on %s", name, r.Node)
	}
	if err := r.release(ctx, vm); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, client.IgnoreNotFound(removeFinalizer(ctx, r.Client, vm, vmFinalizer))
}

func (r *VMReconciler) vmsReferencing(ctx context.Context, field, value, namespace string) []reconcile.Request {
	var list kaktus.VirtualMachineList
	opts := []client.ListOption{client.MatchingFields{field: value}}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	if err := r.List(ctx, &list, opts...); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, vm := range list.Items {
		if vm.Spec.Node == r.Node {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}})
		}
	}
	return reqs
}

func (r *VMReconciler) SetupWithManager(mgr ctrl.Manager, workers int, m *Metrics) error {
	local := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.(*kaktus.VirtualMachine).Spec.Node == r.Node })
	// What a VM reads from a Volume: readiness, size, deletion, who holds it.
	volumeState := func(v *kaktus.Volume) []any {
		ready := meta.FindStatusCondition(v.Status.Conditions, "Ready")
		state := ""
		if ready != nil {
			state = string(ready.Status) + "/" + ready.Reason
		}
		holder := ""
		if v.Status.AttachedTo != nil {
			holder = v.Status.AttachedTo.UID
		}
		return []any{state, v.Spec.Size.String(), v.DeletionTimestamp, holder}
	}
	bridgeState := func(b *kaktus.Bridge) []any {
		ready := false
		for _, n := range b.Status.Nodes {
			if n.Node == r.Node {
				ready = n.Ready
			}
		}
		return []any{b.Spec.BridgeName, ready}
	}
	// Domain lifecycle events and libvirt reconnects, as keys.
	domainEvents := make(chan event.GenericEvent, 1024)
	r.HV.OnDomainEvent(func(domain string) {
		if m := domainKeyRe.FindStringSubmatch(domain); m != nil {
			select {
			case domainEvents <- event.GenericEvent{Object: &kaktus.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: m[1], Name: m[3]}}}:
			default: // a burst beyond the buffer: the resync catches what was dropped
			}
		}
	})
	r.HV.OnReconnect(func() {
		var list kaktus.VirtualMachineList
		if err := r.List(context.Background(), &list); err != nil {
			return
		}
		for i := range list.Items {
			if list.Items[i].Spec.Node == r.Node {
				domainEvents <- event.GenericEvent{Object: &list.Items[i]}
			}
		}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("virtualmachine").
		For(&kaktus.VirtualMachine{}, builder.WithPredicates(specOrMetaChanged(), local)).
		Watches(&kaktus.Volume{}, enqueueRefs(func(v *kaktus.Volume) []reconcile.Request {
			return r.vmsReferencing(context.Background(), indexVolumeRef, v.Name, v.Namespace)
		}), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return !equality.Semantic.DeepEqual(volumeState(e.ObjectOld.(*kaktus.Volume)), volumeState(e.ObjectNew.(*kaktus.Volume)))
		}})).
		Watches(&kaktus.Bridge{}, enqueueRefs(func(b *kaktus.Bridge) []reconcile.Request {
			return r.vmsReferencing(context.Background(), indexBridgeRef, b.Name, "")
		}), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return !equality.Semantic.DeepEqual(bridgeState(e.ObjectOld.(*kaktus.Bridge)), bridgeState(e.ObjectNew.(*kaktus.Bridge)))
		}})).
		WatchesRawSource(source.Channel(domainEvents, enqueueRefs(func(vm *kaktus.VirtualMachine) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}}}
		}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers, ReconciliationTimeout: reconcileTimeout,
			NeedLeaderElection: ptr.To(false)}).
		Complete(m.timed("virtualmachine", r))
}

// indexVMs: VMs by the Volumes and Bridges they name (cache field indexes).
func indexVMs(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &kaktus.VirtualMachine{}, indexVolumeRef, func(o client.Object) []string {
		return volumeRefs(o.(*kaktus.VirtualMachine))
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &kaktus.VirtualMachine{}, indexBridgeRef, func(o client.Object) []string {
		var refs []string
		for _, i := range o.(*kaktus.VirtualMachine).Spec.Interfaces {
			refs = append(refs, i.BridgeRef)
		}
		return refs
	})
}
