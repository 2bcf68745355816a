// kstatus reads Kubernetes objects (a JSON array) on stdin and prints, for each, what
// sigs.k8s.io/cli-utils' kstatus Compute makes of it: the status that kpt, Flux-style waits and
// cli-utils appliers wait on. One JSON object per line: {"name", "status", "message"}.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	var objects []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&objects); err != nil {
		fmt.Fprintln(os.Stderr, "reading objects:", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	for _, raw := range objects {
		// As the API machinery reads them: integers as int64, not float64.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			fmt.Fprintln(os.Stderr, "decoding an object:", err)
			os.Exit(2)
		}
		result, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", u.GetName(), err)
			os.Exit(1)
		}
		_ = out.Encode(map[string]string{"name": u.GetName(), "status": result.Status.String(), "message": result.Message})
	}
}
