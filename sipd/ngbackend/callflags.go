package ngbackend

import (
	"strconv"
	"strings"

	"sipxdp/ng"
	"sipxdp/relay"
	"sipxdp/sipd/media"
)

// callFlags reads the per-call options (NG control protocol
// documentation: "label", "asymmetric", "TOS"; rtpengine's call_flags.c
// for the spellings). label (or from-label) names the sender's side;
// asymmetric is read from every offer and answer of the side; TOS in an
// offer only, where a missing or too large (256 and up) value goes back
// to the default and a negative one leaves the call's TOS alone. A TOS
// that is not a number counts as missing, as rtpengine's get_int_str
// falls back to its default.
func callFlags(r *ng.Request, o *media.Options) {
	o.Label = r.Flags["label"]
	if o.Label == "" {
		o.Label = r.Flags["from-label"]
	}
	_, o.Asymmetric = r.Flags["asymmetric"]
	o.Drop = dropTraffic(r)
	latchFlags(r, o)
	if r.Command != "offer" {
		return
	}
	tos := 256
	if v, ok := r.Flags["tos"]; ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			tos = n
		}
	}
	o.KeepTOS = tos < 0
	if tos >= 0 && tos <= 255 {
		o.TOS = relay.TOS{Set: true, Value: uint8(tos)}
	}
}

// dropTraffic reads drop-traffic, which rtpengine takes from offers and
// answers alike (call_interfaces.c): start or stop, as the key's value or
// in the flags list (drop-traffic-start); any other value is ignored, as
// rtpengine logs and ignores it.
func dropTraffic(r *ng.Request) media.DropTraffic {
	v := strings.ToLower(strings.TrimSpace(r.Flags["drop-traffic"]))
	_, start := r.Flags["drop-traffic-start"]
	_, stop := r.Flags["drop-traffic-stop"]
	switch {
	case v == "start" || start:
		return media.DropStart // rtpengine tests start first
	case v == "stop" || stop:
		return media.DropStop
	}
	return media.DropKeep
}

// callFlag reports whether k is one of the per-call flags the backend
// honours (for honoured()), each as rtpengine does in offer, answer,
// delete and query:
//   - label, from-label: callFlags; query and delete report the label;
//   - set-label, to-label, from-tags (from-tags-TAG in the flags list):
//     rtpengine reads them only in commands that select parties (block
//     and silence media, subscribe, publish, ...: call_interfaces.c,
//     media_block_match and medias_match), which the relay refuses; in
//     offer, answer, delete and query they change nothing there either;
//   - asymmetric, TOS, drop-traffic: callFlags;
//   - symmetric: the default, which rtpengine does not even parse;
//   - strict source: after learning, a flow forwards only the source it
//     locked to, and during learning only its best-ranked one (relay's
//     latch.go): the relay does what strict-source asks of every call, so
//     the flag changes nothing. It is not media.strict_source, which also
//     refuses sources off the SDP's IP and would cut NATed phones that
//     rtpengine's strict-source keeps;
//   - port latching: the relay keeps a stream's local ports whatever the
//     remote end announces, which is what port-latching asks;
//   - loop protect: loop.go;
//   - endpoint-learning, NAT-wait, media handover: latchFlags.
func callFlag(k string) bool {
	if latchFlag(k) {
		return true
	}
	switch k {
	case "label", "from-label", "set-label", "to-label", "from-tags",
		"asymmetric", "symmetric", "strict-source", "port-latching", "tos", "loop-protect",
		"drop-traffic", "drop-traffic-start", "drop-traffic-stop":
		return true
	}
	return strings.HasPrefix(k, "from-tags-")
}
