// kstatus-compute prints the kstatus verdict (sigs.k8s.io/cli-utils) of Kubernetes objects.
//
// Input on stdin: one JSON object, or a JSON list of objects ({"items": [...]} works too).
// Output: one JSON line per object: {"name": ..., "status": "Current|InProgress|Failed|...",
// "message": ...}. Used by the e2e tests to check what Flux and kpt would conclude.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var doc map[string]interface{}
	var objs []map[string]interface{}
	// apimachinery's decoder keeps whole numbers as int64, as unstructured objects need.
	if err := kjson.Unmarshal(raw, &doc); err == nil {
		if items, ok := doc["items"].([]interface{}); ok {
			for _, it := range items {
				objs = append(objs, it.(map[string]interface{}))
			}
		} else {
			objs = append(objs, doc)
		}
	} else if err := kjson.Unmarshal(raw, &objs); err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, o := range objs {
		u := &unstructured.Unstructured{Object: o}
		res, err := status.Compute(u)
		if err != nil {
			fail(err)
		}
		if err := enc.Encode(verdict{u.GetName(), res.Status.String(), res.Message}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus-compute:", err)
	os.Exit(1)
}
