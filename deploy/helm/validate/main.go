// Command validate decodes every object of a rendered Helm chart strictly against the
// Kubernetes API types (and the prometheus-operator's ServiceMonitor type): a field that the
// type does not have, a duplicate field or a kind no scheme knows is an error.
//
//	helm template ... | validate [-configs DIR]
//
// With -configs, the data entries of every ConfigMap are also written to DIR, one file per key,
// so that the services' own config checks can read them.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// maxDocumentBytes bounds one YAML document of the rendered chart.
const maxDocumentBytes = 4 << 20

func main() {
	configs := flag.String("configs", "", "write the data entries of every ConfigMap to this directory")
	flag.Parse()
	objects, err := validate(os.Stdin, *configs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d objects decoded strictly\n", objects)
}

// strictDecoder decodes YAML into the typed object its apiVersion and kind name, refusing
// unknown and duplicate fields.
func strictDecoder() (runtime.Decoder, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := monitoringv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true}), nil
}

// validate decodes every document of in; it fails on the first object that does not decode,
// and when there is none at all.
func validate(in io.Reader, configsDir string) (int, error) {
	decoder, err := strictDecoder()
	if err != nil {
		return 0, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(in, 64<<10))
	objects := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return objects, fmt.Errorf("reading document %d: %w", objects+1, err)
		}
		if len(doc) > maxDocumentBytes {
			return objects, fmt.Errorf("document %d is larger than %d bytes", objects+1, maxDocumentBytes)
		}
		if isEmpty(doc) {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return objects, fmt.Errorf("document %d: %w\n%s", objects+1, err, doc)
		}
		objects++
		fmt.Printf("ok %s %s\n", gvk.GroupVersion(), gvk.Kind)
		if cm, isConfigMap := obj.(*corev1.ConfigMap); isConfigMap && configsDir != "" {
			if err := writeConfigs(cm, configsDir); err != nil {
				return objects, err
			}
		}
	}
	if objects == 0 {
		return 0, errors.New("no objects in the input")
	}
	return objects, nil
}

// isEmpty: a document of comments and blank lines only (a template that rendered nothing).
func isEmpty(doc []byte) bool {
	var v any
	return utilyaml.Unmarshal(doc, &v) == nil && v == nil
}

func writeConfigs(cm *corev1.ConfigMap, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for key, value := range cm.Data {
		if filepath.Base(key) != key {
			return fmt.Errorf("ConfigMap %s: key %q is not a plain file name", cm.Name, key)
		}
		if err := os.WriteFile(filepath.Join(dir, key), []byte(value), 0o644); err != nil {
			return err
		}
	}
	return nil
}
