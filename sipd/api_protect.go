package sipd

import (
	"fmt"
	"strings"

	"sipxdp/sipd/sipserver"
)

// protectMetrics writes the flood ban's and the setup caps' series.
func protectMetrics(b *strings.Builder, st sipserver.Stats) {
	fmt.Fprintf(b, "# HELP sipxdp_sip_bans_total Sources banned for flooding.\n# TYPE sipxdp_sip_bans_total counter\nsipxdp_sip_bans_total %d\n", st.Bans)
	family(b, "sipxdp_sip_banned_requests_total", "counter",
		"Messages from banned sources, by outcome: dropped unread by the flood filter; dropped_unproven by the core, the proof they carried not holding; "+
			"served for credentials that verified or for a live dialog; challenged; passed_response, an answer to a request of ours.",
		"outcome", []labelled{
			{"dropped", st.DroppedFlood},
			{"dropped_unproven", st.Core.Banned.Dropped},
			{"served_credentials", st.Core.Banned.ServedCredentials},
			{"served_dialog", st.Core.Banned.ServedDialog},
			{"challenged", st.Core.Banned.Challenged},
			{"passed_response", st.BannedPassed.Responses},
		})
	family(b, "sipxdp_sip_setup_refused_total", "counter",
		"Relayed calls from unauthenticated callers refused with 503 in setup: over sip.protect.setup_per_source, or over sip.protect.setup_unauthenticated_share of the relay's ports.",
		"reason", []labelled{{"per_source", st.Setup.RefusedPerSource}, {"unauthenticated_share", st.Setup.RefusedShare}})
	fmt.Fprintf(b, "# HELP sipxdp_sip_setup_unauthenticated_calls Relayed calls in setup from unauthenticated callers.\n# TYPE sipxdp_sip_setup_unauthenticated_calls gauge\nsipxdp_sip_setup_unauthenticated_calls %d\n", st.Setup.Calls)
	fmt.Fprintf(b, "# HELP sipxdp_sip_setup_unauthenticated_pairs Relay port pairs those calls hold, and the most they may (0: no bound).\n# TYPE sipxdp_sip_setup_unauthenticated_pairs gauge\n"+
		"sipxdp_sip_setup_unauthenticated_pairs{of=\"held\"} %d\nsipxdp_sip_setup_unauthenticated_pairs{of=\"budget\"} %d\n", st.Setup.Pairs, st.Setup.Budget)
}

type labelled struct {
	value string
	n     uint64
}

// family writes one metric family whose series differ in one label.
func family(b *strings.Builder, name, typ, help, label string, series []labelled) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	for _, s := range series {
		fmt.Fprintf(b, "%s{%s=%q} %d\n", name, label, s.value, s.n)
	}
}
