package policysync

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/lumen-net/lumen/internal/policy"
	"github.com/lumen-net/lumen/internal/resource"
)

// The policy kinds `lumen apply` accepts, validated by the policy decoder
// itself, so that what the store holds is exactly what the engine takes.
var policyKinds = []resource.Kind{
	{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy", Namespaced: true, NamespaceMustExist: true, Plural: "networkpolicies", ShortNames: []string{"netpol"}, Validate: validate},
	{APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy", Namespaced: true, NamespaceMustExist: true, Fields: []string{"spec", "specs"}, Plural: "ciliumnetworkpolicies", ShortNames: []string{"cnp"}, Validate: validate},
	{APIVersion: "cilium.io/v2", Kind: "CiliumClusterwideNetworkPolicy", Fields: []string{"spec", "specs"}, Plural: "ciliumclusterwidenetworkpolicies", ShortNames: []string{"ccnp"}, Validate: validate},
}

// KindNames are the kinds holding policies.
var KindNames = []string{"NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"}

// Kinds are the policy kinds.
func Kinds() []resource.Kind { return slices.Clone(policyKinds) }

func validate(obj *resource.Object) resource.ErrorList {
	_, err := decodeObject(obj)
	if err == nil {
		return nil
	}
	var de *policy.DecodeError
	if errors.As(err, &de) {
		out := make(resource.ErrorList, 0, len(de.Errs))
		for _, fe := range de.Errs {
			out = append(out, &fe)
		}
		return out
	}
	return resource.ErrorList{{Path: "spec", Msg: err.Error()}}
}

func decodeObject(obj *resource.Object) (*policy.Policy, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return policy.Decode(b)
}
