//go:build tools

// The helm CLI is built from this module's pinned dependencies.
package main

import _ "helm.sh/helm/v4/cmd/helm"
