package callreport

import (
	"io"

	"sipxdp/bench/out"
)

// columns follow the JSON fields, with the status codes in one cell.
var columns = out.JSONColumns(map[string]func(*Result) string{
	"status_codes": func(r *Result) string { return statusCodes(r.StatusCodes, " ") },
	"dtls_errors":  func(r *Result) string { return statusCodes(r.DTLSErrors, " ") },
	"relay_nodes":  relayNodesCell,
	"proxy_nodes":  proxyNodesCell,
})

// WriteCSV writes a header and one flat row per result, in the order given:
// a spreadsheet sorts as its user likes, and the order matches the JSONL.
func WriteCSV(w io.Writer, rs []Result) error { return out.Columns(columns, rs).WriteCSV(w) }
