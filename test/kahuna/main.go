// Command kahuna does to the lab what Kahuna, the Kowabunga orchestrator, does to a Kaktus
// cluster, the way a Go client of the API does it: client-go's dynamic client on unstructured
// objects (no generated clientset), and cli-utils' kstatus to know when an object is done or can
// never be. It creates a Bridge, two Volumes and a VirtualMachine, waits for them to be Current,
// grows a Volume, halts the VM and deletes everything, waiting for each object to be gone.
//
// Each step is printed as one JSON line; the exit status is non-zero at the first step that fails
// (an object kstatus reads as Failed fails at once, not at the timeout).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

const group, version = "kaktus.kowabunga.cloud", "v1alpha1"

var (
	bridges  = schema.GroupVersionResource{Group: group, Version: version, Resource: "bridges"}
	volumes  = schema.GroupVersionResource{Group: group, Version: version, Resource: "volumes"}
	machines = schema.GroupVersionResource{Group: group, Version: version, Resource: "virtualmachines"}
)

// ref names one object of the run.
type ref struct {
	gvr       schema.GroupVersionResource
	namespace string
	name      string
}

func (r ref) client(c dynamic.Interface) dynamic.ResourceInterface {
	if r.namespace == "" {
		return c.Resource(r.gvr)
	}
	return c.Resource(r.gvr).Namespace(r.namespace)
}

func (r ref) String() string { return r.gvr.Resource + "/" + r.name }

// step is what the program prints for each thing it did.
type step struct {
	Step    string            `json:"step"`
	Seconds float64           `json:"seconds"`
	Status  map[string]string `json:"status,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
	Error   string            `json:"error,omitempty"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	namespace := flag.String("namespace", "kahuna", "namespace of the Volumes and the VM (must exist)")
	node := flag.String("node", "", "the Kaktus node that runs the VM")
	bridge := flag.String("bridge", "kahuna0", "name of the Bridge and of its Linux bridge")
	template := flag.String("template", "templates/debian-12@kowabunga", "pool/image@snapshot the OS disk is cloned from")
	timeout := flag.Duration("timeout", 3*time.Minute, "how long each wait may take")
	flag.Parse()
	if *node == "" {
		fail("kahuna: -node is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail(err.Error())
	}
	cfg.UserAgent = "kahuna-test"
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		fail(err.Error())
	}
	r := run{client: client, timeout: *timeout}

	br := ref{bridges, "", *bridge}
	osDisk := ref{volumes, *namespace, "kahuna-os"}
	data := ref{volumes, *namespace, "kahuna-data"}
	vm := ref{machines, *namespace, "kahuna-vm"}
	pool, image, snapshot, err := splitImage(*template)
	if err != nil {
		fail(err.Error())
	}

	r.do("create", func(ctx context.Context, s *step) error {
		for _, o := range []struct {
			ref  ref
			spec map[string]any
		}{
			{br, map[string]any{
				"bridgeName":   *bridge,
				"nodeSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/hostname": *node}},
			}},
			{osDisk, map[string]any{
				"pool": "rbd", "size": "3Gi",
				"source": map[string]any{"image": map[string]any{"pool": pool, "name": image, "snapshot": snapshot}},
			}},
			{data, map[string]any{"pool": "rbd", "size": "64Mi", "reclaimPolicy": "Delete"}},
			{vm, map[string]any{
				"node": *node, "runStrategy": "Always", "memory": "256Mi", "graphics": "none",
				"shutdownGracePeriodSeconds": int64(5),
				"disks": []any{
					map[string]any{"name": "os", "volumeRef": osDisk.name, "bootOrder": int64(1)},
					map[string]any{"name": "data", "volumeRef": data.name},
				},
				"interfaces": []any{map[string]any{"name": "lan", "bridgeRef": br.name}},
			}},
		} {
			kind := map[string]string{"bridges": "Bridge", "volumes": "Volume", "virtualmachines": "VirtualMachine"}[o.ref.gvr.Resource]
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": group + "/" + version,
				"kind":       kind,
				"metadata":   map[string]any{"name": o.ref.name, "namespace": o.ref.namespace},
				"spec":       o.spec,
			}}
			if o.ref.namespace == "" {
				unstructured.RemoveNestedField(u.Object, "metadata", "namespace")
			}
			created, err := o.ref.client(client).Create(ctx, u, metav1.CreateOptions{FieldManager: "kahuna"})
			if err != nil {
				return fmt.Errorf("create %s: %w", o.ref, err)
			}
			// What a waiter reads before the operator has seen the object: it must not be Current yet.
			res, err := status.Compute(created)
			if err != nil {
				return err
			}
			s.Status[o.ref.String()] = string(res.Status)
		}
		return nil
	})
	r.do("current", func(ctx context.Context, s *step) error {
		return r.waitCurrent(ctx, s, br, osDisk, data, vm)
	})
	r.do("grow", func(ctx context.Context, s *step) error {
		if err := r.merge(ctx, data, `{"spec":{"size":"128Mi"}}`); err != nil {
			return err
		}
		if err := r.waitCurrent(ctx, s, data); err != nil {
			return err
		}
		return r.field(ctx, s, data, "capacity", "status", "capacity")
	})
	r.do("halt", func(ctx context.Context, s *step) error {
		if err := r.merge(ctx, vm, `{"spec":{"runStrategy":"Halted"}}`); err != nil {
			return err
		}
		if err := r.waitCurrent(ctx, s, vm); err != nil {
			return err
		}
		return r.field(ctx, s, vm, "phase", "status", "phase")
	})
	r.do("delete", func(ctx context.Context, s *step) error {
		// The VM first, as Kahuna tears down: its Volumes would wait for it anyway (in use).
		for _, o := range []ref{vm, data, osDisk, br} {
			if err := o.client(client).Delete(ctx, o.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %s: %w", o, err)
			}
		}
		return r.waitGone(ctx, s, vm, data, osDisk, br)
	})
}

type run struct {
	client  dynamic.Interface
	timeout time.Duration
}

// do runs one step under the timeout and prints it; the first failing step ends the program.
func (r run) do(name string, f func(ctx context.Context, s *step) error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	started := time.Now()
	s := step{Step: name, Status: map[string]string{}, Fields: map[string]string{}}
	err := f(ctx, &s)
	s.Seconds = time.Since(started).Seconds()
	if err != nil {
		s.Error = err.Error()
	}
	line, _ := json.Marshal(s)
	fmt.Println(string(line))
	if err != nil {
		os.Exit(1)
	}
}

func (r run) merge(ctx context.Context, o ref, patch string) error {
	_, err := o.client(r.client).Patch(ctx, o.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "kahuna"})
	if err != nil {
		return fmt.Errorf("patch %s: %w", o, err)
	}
	return nil
}

func (r run) field(ctx context.Context, s *step, o ref, key string, path ...string) error {
	u, err := o.client(r.client).Get(ctx, o.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	v, _, _ := unstructured.NestedString(u.Object, path...)
	s.Fields[key] = v
	return nil
}

// waitCurrent polls until kstatus reads every object Current; Failed ends the wait at once.
func (r run) waitCurrent(ctx context.Context, s *step, objects ...ref) error {
	return r.poll(ctx, func(ctx context.Context) (bool, error) {
		done := true
		for _, o := range objects {
			u, err := o.client(r.client).Get(ctx, o.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			res, err := status.Compute(u)
			if err != nil {
				return false, err
			}
			s.Status[o.String()] = string(res.Status)
			switch res.Status {
			case status.FailedStatus:
				return false, fmt.Errorf("%s is Failed: %s", o, res.Message)
			case status.CurrentStatus:
			default:
				done = false
			}
		}
		return done, nil
	})
}

// waitGone polls until every object is NotFound (its finalizers done: host objects removed).
func (r run) waitGone(ctx context.Context, s *step, objects ...ref) error {
	return r.poll(ctx, func(ctx context.Context) (bool, error) {
		done := true
		for _, o := range objects {
			_, err := o.client(r.client).Get(ctx, o.name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				s.Status[o.String()] = string(status.NotFoundStatus)
			case err != nil:
				return false, err
			default:
				s.Status[o.String()] = string(status.TerminatingStatus)
				done = false
			}
		}
		return done, nil
	})
}

func (r run) poll(ctx context.Context, check wait.ConditionWithContextFunc) error {
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, check)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("not done after %s", r.timeout)
	}
	return err
}

func splitImage(s string) (pool, image, snapshot string, err error) {
	pool, rest, _ := strings.Cut(s, "/")
	image, snapshot, _ = strings.Cut(rest, "@")
	if pool == "" || image == "" || snapshot == "" {
		err = fmt.Errorf("template %q is not pool/image@snapshot", s)
	}
	return
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}
