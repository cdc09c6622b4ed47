package cni

import (
	"github.com/containernetworking/cni/pkg/types"
)

// podArgs are the CNI_ARGS lumen-cni understands. The K8S_* keys are the ones
// kubelet and CRI runtimes pass; unknown keys are an error unless the runtime
// sets IgnoreUnknown=1, as the CNI conventions require.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// parseArgs decodes CNI_ARGS; errors are "invalid environment variables" (4).
func parseArgs(s string) (*podArgs, error) {
	a := &podArgs{}
	if err := types.LoadArgs(s, a); err != nil {
		return nil, newError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS=%q: %v", s, err)
	}
	return a, nil
}
