package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	kaktus "kaktus.kowabunga.cloud/bench-peer/api/v1alpha1"
)

// BridgeReconciler (every peer, for its own node): the Linux bridge exists in the node's network
// namespace when the Bridge selects the node, with its VLAN filtering, named ports and MTU; this
// node's entry in status says what was seen, and every peer computes the same aggregate. The
// bridge goes (deletion, node no longer selected) only once no VM NIC of this node uses it.
// Not done by the peer (reported on the node's entry): stp (netlink's Go API cannot set it) and
// VLAN ports (this kernel has no 8021q anyway).
type BridgeReconciler struct {
	client.Client
	Node   string
	Net    *NetHost
	Resync time.Duration
	Events recorder.EventRecorder
}

type problem struct{ reason, message string }

func (r *BridgeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	var b kaktus.Bridge
	if err := r.Get(ctx, req.NamespacedName, &b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var self corev1.Node
	hasSelf := true
	if err := r.Get(ctx, types.NamespacedName{Name: r.Node}, &self); apierrors.IsNotFound(err) {
		hasSelf = false
	} else if err != nil {
		return ctrl.Result{}, err
	}
	finalizer := bridgeFinalizer(r.Node)
	deleting := !b.DeletionTimestamp.IsZero()
	// Without its own Node the peer cannot tell whether it is selected: it never cleans up then.
	if deleting || (hasSelf && !selects(b.Spec.NodeSelector, self.Labels)) {
		if !controllerutil.ContainsFinalizer(&b, finalizer) {
			return r.released(ctx, &b)
		}
		return r.cleanup(ctx, &b, finalizer)
	}
	if !hasSelf {
		log.Info("this peer's Node does not exist; bridges wait for it", "node", r.Node)
		return ctrl.Result{RequeueAfter: retryIn}, nil
	}
	if err := addFinalizer(ctx, r.Client, &b, finalizer); err != nil {
		return ctrl.Result{}, err
	}
	orig := b.DeepCopy()

	links, err := r.Net.Links()
	if err != nil {
		return ctrl.Result{}, err
	}
	acted, prob := r.apply(&b, links)
	if prob != nil {
		r.Events.Eventf(&b, nil, corev1.EventTypeWarning, prob.reason, "Reconcile", "%s: %s", r.Node, prob.message)
	}
	// Converged (the usual resync) costs one link dump; the host is read again only after a change.
	if acted {
		if links, err = r.Net.Links(); err != nil {
			return ctrl.Result{}, err
		}
	}
	entry := r.nodeEntry(&b, links, prob)
	if err := r.report(ctx, orig, &b, &entry); err != nil {
		return ctrl.Result{}, err
	}
	if prob != nil {
		return ctrl.Result{RequeueAfter: retryIn}, nil
	}
	return ctrl.Result{RequeueAfter: r.Resync}, nil
}

// apply makes this node's bridge match the spec, one host call per change; a refusal becomes the
// node's problem (reason + message) after whatever could be done.
func (r *BridgeReconciler) apply(b *kaktus.Bridge, links []Link) (acted bool, prob *problem) {
	name, mark := b.IfName(), linkMark(string(b.UID))
	hostErr := func(err error) (bool, *problem) { return true, &problem{"HostError", err.Error()} }
	var previous *kaktus.BridgeNodeStatus
	for i := range b.Status.Nodes {
		if b.Status.Nodes[i].Node == r.Node {
			previous = &b.Status.Nodes[i]
		}
	}
	byName := map[string]Link{}
	for _, l := range links {
		byName[l.Name] = l
		// Links this node began to make for the Bridge and never finished.
		if strings.HasPrefix(l.Name, tmpLinkPrefix) && l.Alias == mark {
			if err := r.Net.DeleteLink(l); err != nil {
				return hostErr(err)
			}
			acted = true
		}
	}
	cur, exists := byName[name]
	exists = exists && cur.Kind == "bridge"
	vlanFiltering := b.Spec.VlanFiltering != nil && *b.Spec.VlanFiltering
	if exists && cur.Alias != mark {
		if b.Annotations[adoptAnnotation] != "true" {
			return acted, &problem{"NotOwned", fmt.Sprintf("NotOwned: bridge %s on %s was not made by the operator for this Bridge; left untouched", name, r.Node)}
		}
		if err := r.Net.SetAlias(cur, mark); err != nil {
			return hostErr(err)
		}
		acted = true
		r.Events.Eventf(b, nil, corev1.EventTypeNormal, "Adopted", "Adopt", "adopted bridge %s on %s", name, r.Node)
	}
	changed := false
	if !exists {
		if err := r.Net.CreateBridge(name, mark, vlanFiltering); err != nil {
			return hostErr(err)
		}
		acted, changed = true, true
		if previous != nil && previous.Ready {
			r.Events.Eventf(b, nil, corev1.EventTypeWarning, "Recreated", "Create", "bridge %s vanished from %s", name, r.Node)
		} else {
			r.Events.Eventf(b, nil, corev1.EventTypeNormal, "Created", "Create", "created bridge %s on %s", name, r.Node)
		}
	} else if (cur.VlanFiltering != nil && *cur.VlanFiltering) != vlanFiltering || !cur.Up {
		var vf *bool
		if (cur.VlanFiltering != nil && *cur.VlanFiltering) != vlanFiltering {
			vf = &vlanFiltering
		}
		if err := r.Net.UpdateBridge(cur, vf); err != nil {
			return hostErr(err)
		}
		acted, changed = true, true
		r.Events.Eventf(b, nil, corev1.EventTypeNormal, "Updated", "Update", "updated bridge %s settings on %s", name, r.Node)
	}
	if b.Spec.STP != nil && *b.Spec.STP {
		prob = &problem{"Unsupported", "stp is not supported by the benchmark peer"}
	}
	if changed || len(b.Spec.Ports) > 0 || b.Spec.MTU != nil {
		// Fresh handles on the bridge (it may just have been made).
		fresh, err := r.Net.Links()
		if err != nil {
			return hostErr(err)
		}
		byName = map[string]Link{}
		for _, l := range fresh {
			byName[l.Name] = l
		}
		cur = byName[name]
	}
	wanted := map[string]bool{}
	for _, p := range b.Spec.Ports {
		if p.Name != "" {
			wanted[p.Name] = true
		}
	}
	// Ports this node enslaved before that the spec no longer lists are released (never others').
	if previous != nil {
		for _, old := range previous.Ports {
			if l, ok := byName[old]; ok && !wanted[old] && l.Master == name {
				if err := r.Net.RemovePort(l); err != nil {
					return hostErr(err)
				}
				acted, changed = true, true
			}
		}
	}
	for _, p := range b.Spec.Ports {
		if p.Vlan != nil {
			if prob == nil {
				prob = &problem{"Unsupported", fmt.Sprintf("VLAN port %s.%d is not supported by the benchmark peer", p.Vlan.Parent, p.Vlan.ID)}
			}
			continue
		}
		l, ok := byName[p.Name]
		if !ok {
			if prob == nil {
				prob = &problem{"PortNotFound", fmt.Sprintf("add port: interface %s does not exist on %s", p.Name, r.Node)}
			}
			continue
		}
		if l.Master != name || !l.Up {
			if err := r.Net.AddPort(cur, l); err != nil {
				return hostErr(err)
			}
			acted, changed = true, true
		}
	}
	// The MTU last: enslaving a port resets the bridge's MTU to the smallest port's.
	if b.Spec.MTU != nil && (changed || cur.MTU != int(*b.Spec.MTU)) {
		if err := r.Net.SetMTU(cur, int(*b.Spec.MTU)); err != nil {
			return hostErr(err)
		}
		acted = true
	}
	return acted, prob
}

func tapCount(links []Link, bridge string) int32 {
	n := int32(0)
	for _, l := range links {
		if l.Master == bridge && l.Kind == "tuntap" {
			n++
		}
	}
	return n
}

func (r *BridgeReconciler) nodeEntry(b *kaktus.Bridge, links []Link, prob *problem) kaktus.BridgeNodeStatus {
	name := b.IfName()
	var bridge *Link
	enslaved := map[string]bool{}
	for i, l := range links {
		if l.Name == name && l.Kind == "bridge" {
			bridge = &links[i]
		}
		if l.Master == name {
			enslaved[l.Name] = true
		}
	}
	var present, missing []string
	for _, p := range b.Spec.Ports {
		pn := p.Name
		if p.Vlan != nil {
			pn = fmt.Sprintf("%s.%d", p.Vlan.Parent, p.Vlan.ID)
		}
		if bridge != nil && enslaved[pn] {
			present = append(present, pn)
		} else {
			missing = append(missing, pn)
		}
	}
	message := ""
	if prob != nil {
		message = prob.message
	} else if len(missing) > 0 {
		message = fmt.Sprintf("port(s) %s not enslaved", strings.Join(missing, ", "))
	}
	e := kaktus.BridgeNodeStatus{Node: r.Node, Ready: bridge != nil && message == "", Ports: present,
		AttachedNICs: int32p(tapCount(links, name)), Message: message}
	if bridge != nil {
		e.MTU = int32p(int32(bridge.MTU))
	}
	return e
}

// report sets this node's entry (nil: removes it) and the aggregate the entries imply, and
// writes the status if it changed.
func (r *BridgeReconciler) report(ctx context.Context, orig, b *kaktus.Bridge, entry *kaktus.BridgeNodeStatus) error {
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return err
	}
	var entries []kaktus.BridgeNodeStatus
	for _, n := range b.Status.Nodes {
		if n.Node != r.Node {
			entries = append(entries, n)
		}
	}
	if entry != nil {
		entries = append(entries, *entry)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Node < entries[j].Node })
	selected := map[string]bool{}
	for _, n := range nodes.Items {
		if selects(b.Spec.NodeSelector, n.Labels) {
			selected[n.Name] = true
		}
	}
	ready, failing := 0, []string{}
	for _, e := range entries {
		if e.Ready && selected[e.Node] {
			ready++
		}
		if !e.Ready {
			msg := e.Message
			if msg == "" {
				msg = "not ready"
			}
			failing = append(failing, e.Node+": "+msg)
		}
	}
	allReady := len(selected) > 0 && ready == len(selected)
	why := strings.Join(failing, "; ")
	s := &b.Status
	s.Nodes = entries
	s.ReadyNodes = fmt.Sprintf("%d/%d", ready, len(selected))
	switch {
	case !b.DeletionTimestamp.IsZero():
		s.Phase = "Terminating"
	case allReady:
		s.Phase = "Ready"
	case len(failing) > 0:
		s.Phase = "Degraded"
	default:
		s.Phase = "Pending"
	}
	gen := b.Generation
	readyCond := cond{"Ready", "True", "BridgeReady", fmt.Sprintf("ready on %d node(s)", ready)}
	if !allReady {
		readyCond = cond{"Ready", "False", "NoNodeSelected", why}
		if len(selected) > 0 {
			readyCond.Reason = "NodesNotReady"
		}
	}
	synced, degraded := cond{"Synced", "True", "Synced", ""}, cond{"Degraded", "False", "AllNodesHealthy", why}
	if len(failing) > 0 {
		synced, degraded = cond{"Synced", "False", "HostError", why}, cond{"Degraded", "True", "NodesFailing", why}
	}
	setConditions(&s.Conditions, gen, readyCond, synced, degraded)
	if b.DeletionTimestamp.IsZero() {
		s.ObservedGeneration = gen
	}
	return patchStatus(ctx, r.Client, orig, b, func(b *kaktus.Bridge) any { return b.Status })
}

// cleanup on this node: wait while VMs of this node use the bridge, else remove what the peer
// made (deletionPolicy Orphan leaves it), drop this node's entry, then its finalizer.
func (r *BridgeReconciler) cleanup(ctx context.Context, b *kaktus.Bridge, finalizer string) (ctrl.Result, error) {
	orig := b.DeepCopy()
	name := b.IfName()
	var vms kaktus.VirtualMachineList
	if err := r.List(ctx, &vms, client.MatchingFields{indexBridgeRef: b.Name}); err != nil {
		return ctrl.Result{}, err
	}
	var users []string
	for _, vm := range vms.Items {
		if vm.Spec.Node == r.Node {
			users = append(users, vm.Namespace+"/"+vm.Name)
		}
	}
	sort.Strings(users)
	links, err := r.Net.Links()
	if err != nil {
		return ctrl.Result{}, err
	}
	if taps := tapCount(links, name); len(users) > 0 || taps > 0 {
		what := fmt.Sprintf("%d NIC(s)", taps)
		if len(users) > 0 {
			what = "VirtualMachine " + strings.Join(users, ", ")
		}
		msg := fmt.Sprintf("waiting to remove %s: used by %s", name, what)
		r.Events.Eventf(b, nil, corev1.EventTypeWarning, "InUse", "Delete", "%s: %s", r.Node, msg)
		entry := kaktus.BridgeNodeStatus{Node: r.Node, Ready: false, AttachedNICs: int32p(taps), Message: msg}
		return ctrl.Result{RequeueAfter: retryIn}, r.report(ctx, orig, b, &entry)
	}
	if b.Spec.DeletionPolicy != "Orphan" {
		for _, l := range links {
			if l.Name == name && l.Alias == linkMark(string(b.UID)) {
				if err := r.Net.DeleteLink(l); err != nil {
					return ctrl.Result{}, err
				}
				r.Events.Eventf(b, nil, corev1.EventTypeNormal, "Deleted", "Delete", "removed bridge %s from %s", name, r.Node)
			}
		}
	}
	if err := r.report(ctx, orig, b, nil); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, client.IgnoreNotFound(removeFinalizer(ctx, r.Client, b, finalizer))
}

// released: cleanup is due but this node's finalizer is already off. Drop a stale entry, and the
// finalizers of nodes that no longer exist (a deleted Bridge must not wait for them forever).
func (r *BridgeReconciler) released(ctx context.Context, b *kaktus.Bridge) (ctrl.Result, error) {
	if b.DeletionTimestamp.IsZero() {
		if slices.ContainsFunc(b.Status.Nodes, func(n kaktus.BridgeNodeStatus) bool { return n.Node == r.Node }) {
			return ctrl.Result{}, r.report(ctx, b.DeepCopy(), b, nil)
		}
		return ctrl.Result{}, nil
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes); err != nil {
		return ctrl.Result{}, err
	}
	live := map[string]bool{}
	for _, n := range nodes.Items {
		live[bridgeFinalizer(n.Name)] = true
	}
	for _, f := range b.Finalizers {
		if strings.HasPrefix(f, "kaktus.kowabunga.cloud/bridge-") && !live[f] {
			return ctrl.Result{}, client.IgnoreNotFound(removeFinalizer(ctx, r.Client, b, f))
		}
	}
	return ctrl.Result{}, nil
}

// selects: metav1.LabelSelector semantics; an omitted selector selects every node.
func selects(sel *metav1.LabelSelector, nodeLabels map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(nodeLabels))
}

func (r *BridgeReconciler) allBridges(ctx context.Context) []reconcile.Request {
	var list kaktus.BridgeList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, b := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: b.Name}})
	}
	return reqs
}

func (r *BridgeReconciler) SetupWithManager(mgr ctrl.Manager, workers int, m *Metrics) error {
	// A link change in the namespace may be a bridge deleted behind the peer's back.
	linkEvents := make(chan event.GenericEvent, 1)
	r.Net.onLink = func() {
		select {
		case linkEvents <- event.GenericEvent{Object: &kaktus.Bridge{}}:
		default: // one pending "look at every bridge" is enough
		}
	}
	if err := mgr.Add(r.Net); err != nil {
		return err
	}
	everyBridge := enqueueRefs(func(client.Object) []reconcile.Request { return r.allBridges(context.Background()) })
	bridgesOfVM := enqueueRefs(func(vm *kaktus.VirtualMachine) []reconcile.Request { return bridgeRefs(vm, r.Node) })
	return ctrl.NewControllerManagedBy(mgr).
		Named("bridge").
		For(&kaktus.Bridge{}, builder.WithPredicates(specOrMetaChanged())).
		// Which nodes exist and their labels decide where a Bridge goes (heartbeats do not).
		Watches(&corev1.Node{}, everyBridge, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// A bridge's removal waits for the VMs on this node whose NICs use it.
		Watches(&kaktus.VirtualMachine{}, bridgesOfVM, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return !equality.Semantic.DeepEqual(bridgeRefs(e.ObjectOld.(*kaktus.VirtualMachine), r.Node),
					bridgeRefs(e.ObjectNew.(*kaktus.VirtualMachine), r.Node))
			},
		})).
		WatchesRawSource(source.Channel(linkEvents, everyBridge)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers, ReconciliationTimeout: reconcileTimeout,
			NeedLeaderElection: ptr.To(false)}).
		Complete(m.timed("bridge", r))
}

func bridgeRefs(vm *kaktus.VirtualMachine, node string) []reconcile.Request {
	if vm.Spec.Node != node {
		return nil
	}
	var reqs []reconcile.Request
	for _, i := range vm.Spec.Interfaces {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: i.BridgeRef}})
	}
	return reqs
}
