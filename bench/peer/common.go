package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Condition input: metav1 semantics (meta.SetStatusCondition moves lastTransitionTime only when
// the status changes), stamped with the generation it describes.
type cond struct {
	Type, Status, Reason, Message string
}

func setConditions(list *[]metav1.Condition, generation int64, conds ...cond) {
	for _, c := range conds {
		meta.SetStatusCondition(list, metav1.Condition{
			Type: c.Type, Status: metav1.ConditionStatus(c.Status), Reason: c.Reason, Message: c.Message,
			ObservedGeneration: generation,
		})
	}
}

// patchStatus writes the status subresource only when it differs from what was read, as a merge
// patch guarded by the resourceVersion it was computed from (a conflict requeues the key).
func patchStatus[T client.Object](ctx context.Context, c client.Client, orig, obj T, statusOf func(T) any) error {
	if equality.Semantic.DeepEqual(statusOf(orig), statusOf(obj)) {
		return nil
	}
	return c.Status().Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// addFinalizer / removeFinalizer: a guarded merge patch of metadata.finalizers only (Update would
// rewrite the whole object from the Go struct).
func addFinalizer(ctx context.Context, c client.Client, obj client.Object, finalizer string) error {
	orig := obj.DeepCopyObject().(client.Object)
	if !controllerutil.AddFinalizer(obj, finalizer) {
		return nil
	}
	return c.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

func removeFinalizer(ctx context.Context, c client.Client, obj client.Object, finalizer string) error {
	orig := obj.DeepCopyObject().(client.Object)
	if !controllerutil.RemoveFinalizer(obj, finalizer) {
		return nil
	}
	return c.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// specOrMetaChanged is the TypeScript agent's primary filter: generation, labels, annotations or
// deletion changed (status writes echoed back and finalizer edits do not pass).
func specOrMetaChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld, e.ObjectNew
			return o.GetGeneration() != n.GetGeneration() ||
				!equality.Semantic.DeepEqual(o.GetDeletionTimestamp(), n.GetDeletionTimestamp()) ||
				!equality.Semantic.DeepEqual(o.GetLabels(), n.GetLabels()) ||
				!equality.Semantic.DeepEqual(o.GetAnnotations(), n.GetAnnotations())
		},
	}
}

// formatBytes: the shortest exact binary form ("16Mi", "1536Mi", "1000"), as status.capacity reads.
func formatBytes(n uint64) *resource.Quantity {
	return resource.NewQuantity(int64(n), resource.BinarySI)
}

// bytesOf rounds a quantity up to whole bytes.
func bytesOf(q resource.Quantity) (uint64, error) {
	v, ok := q.AsInt64()
	if !ok {
		// A fraction or a huge value: round up through the milli value.
		v = (q.MilliValue() + 999) / 1000
	}
	if v <= 0 {
		return 0, fmt.Errorf("quantity %s is not a positive byte count", q.String())
	}
	return uint64(v), nil
}

// cephMonitors reads mon_host from ceph.conf and keeps the v1 addresses (what QEMU speaks), like
// the TypeScript agent's parseMonHost: "[v2:H:3300,v1:H:6789] ...", "H:6789,H2" or "H".
func cephMonitors(confPath string) ([][2]string, error) {
	text, err := os.ReadFile(confPath)
	if err != nil {
		return nil, err
	}
	m := regexp.MustCompile(`(?m)^\s*mon[ _]host\s*=\s*(.+)$`).FindStringSubmatch(string(text))
	if m == nil {
		return nil, fmt.Errorf("%s has no mon_host", confPath)
	}
	var out [][2]string
	for _, group := range splitTopLevel(strings.TrimSpace(m[1]), " \t,;") {
		addrs := []string{group}
		if strings.HasPrefix(group, "[") && !regexp.MustCompile(`(?i)^\[[0-9a-f:]+\]`).MatchString(group) {
			addrs = splitTopLevel(group[1:len(group)-1], ",")
		}
		var v1 string
		for _, a := range addrs {
			if strings.HasPrefix(a, "v1:") {
				v1 = a
				break
			}
		}
		if v1 == "" {
			for _, a := range addrs {
				if !strings.HasPrefix(a, "v2:") {
					v1 = a
					break
				}
			}
		}
		hp := regexp.MustCompile(`(?i)^(?:v1:)?(\[[0-9a-f:]+\]|[^:/]+)(?::(\d+))?`).FindStringSubmatch(v1)
		if hp == nil {
			continue
		}
		port := hp[2]
		if port == "" {
			port = "6789"
		}
		out = append(out, [2]string{strings.Trim(hp[1], "[]"), port})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no mon_host the peer can read", confPath)
	}
	return out, nil
}

func splitTopLevel(text, separators string) []string {
	var parts []string
	depth := 0
	var cur strings.Builder
	for _, ch := range text {
		switch {
		case ch == '[':
			depth++
			cur.WriteRune(ch)
		case ch == ']':
			depth--
			cur.WriteRune(ch)
		case depth == 0 && strings.ContainsRune(separators, ch):
			if cur.Len() > 0 {
				parts = append(parts, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteRune(ch)
		}
	}
	if cur.Len() > 0 {
		parts = append(parts, cur.String())
	}
	return parts
}

// cephKey reads the cephx key ("key = ...") from a keyring file.
func cephKey(keyring string) (string, error) {
	text, err := os.ReadFile(keyring)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^\s*key\s*=\s*(\S+)\s*$`).FindStringSubmatch(string(text))
	if m == nil {
		return "", fmt.Errorf("no key in %s", keyring)
	}
	return m[1], nil
}

// uuidFrom is the TypeScript agent's name-based UUID (sha256, RFC 4122 layout), so that both
// agents define the very same libvirt secret for a Ceph user.
func uuidFrom(name string) string {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	return h[0:8] + "-" + h[8:12] + "-5" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// bridgeFinalizer: one finalizer per node (long node names hashed), as the TypeScript agent names it.
func bridgeFinalizer(node string) string {
	id := node
	if len(node) > 56 {
		sum := sha256.Sum256([]byte(node))
		id = hex.EncodeToString(sum[:])[:56]
	}
	return "kaktus.kowabunga.cloud/bridge-" + id
}

func int32p(v int32) *int32 { return &v }

// enqueueRefs maps an object to the keys it concerns; on an update both the old and the new
// object's keys are queued (a reference removed must be looked at too).
func enqueueRefs[T client.Object](refs func(T) []reconcile.Request) handler.EventHandler {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
		if t, ok := o.(T); ok {
			for _, r := range refs(t) {
				q.Add(r)
			}
		}
	}
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	return handler.Funcs{
		CreateFunc:  func(_ context.Context, e event.CreateEvent, q queue) { add(q, e.Object) },
		UpdateFunc:  func(_ context.Context, e event.UpdateEvent, q queue) { add(q, e.ObjectOld); add(q, e.ObjectNew) },
		DeleteFunc:  func(_ context.Context, e event.DeleteEvent, q queue) { add(q, e.Object) },
		GenericFunc: func(_ context.Context, e event.GenericEvent, q queue) { add(q, e.Object) },
	}
}
