package datapath

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// queryTCX lists the program IDs attached at TCX ingress of ifindex.
func queryTCX(ifindex int) ([]uint32, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, err
	}
	var ids []uint32
	for _, p := range res.Programs {
		ids = append(ids, uint32(p.ID))
	}
	return ids, nil
}
