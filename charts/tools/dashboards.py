#!/usr/bin/env python3
"""Writes Confab's Grafana dashboards: charts/confab/dashboards/*.json.

The JSON files are what the chart ships (ConfigMaps for the Grafana sidecar);
this script is how they are kept consistent: one datasource variable, the same
label filters, the same panel shapes. Edit the panels here, then run

    python3 charts/tools/dashboards.py          # rewrite the JSON
    python3 charts/tools/dashboards.py --check  # exit 1 if the JSON is stale

e2e/tests/helm_chart.rs runs --check; confab/tests/observability.rs runs every
panel query against a real Prometheus scraping a real cluster.

Labels: `namespace`, `chatcluster`, `pod` and `component` (gateway,
dispatcher) come from the chart's PodMonitor relabelling.
"""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parent.parent / "confab" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", chatcluster=~"$chatcluster"'
RI = "$__rate_interval"


def sel(extra=""):
    return "{" + SEL + (", " + extra if extra else "") + "}"


def rate(metric, extra="", by=None):
    inner = f"rate({metric}{sel(extra)}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q, metric, by=None, extra=""):
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel(extra)}[{RI}])))"


def mean(metric):
    """The exact mean of a histogram; for counts (batch sizes, fan-out) it
    reads better than a p50 interpolated inside a bucket."""
    return f"{rate(metric + '_sum')} / {rate(metric + '_count')}"


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


class Board:
    def __init__(self, uid, title, description, variables=("namespace", "chatcluster"), var_metric=None):
        self.uid, self.title, self.description = uid, title, description
        self.variables, self.var_metric = variables, var_metric
        self.panels, self.x, self.y, self.row_h, self.next_id = [], 0, 0, 0, 1

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append(
            {"type": "row", "title": title, "id": self.next_id, "collapsed": False, "panels": [],
             "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}}
        )
        self.next_id += 1
        self.y += 1

    def _panel(self, kind, title, description, unit, targets, w, h, extra=None):
        refs = "ABCDEFGH"
        panel = {
            "type": kind,
            "title": title,
            "description": description,
            "id": self.next_id,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [target(e, l, refs[i]) for i, (e, l) in enumerate(targets)],
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "showPoints": "never"}
            panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                                "tooltip": {"mode": "multi", "sort": "desc"}}
        if kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                "colorMode": "value", "graphMode": "area"}
        panel.update(extra or {})
        self.panels.append(panel)
        self.next_id += 1

    def graph(self, title, description, unit, targets, w=12, h=8):
        self._panel("timeseries", title, description, unit, targets, w, h)

    def stat(self, title, description, unit, expr, w=6, h=4):
        self._panel("stat", title, description, unit, [(expr, "")], w, h)

    def json(self):
        metric = self.var_metric or "confab_store_operation_duration_seconds_count"
        variables = [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        ]
        for v in self.variables:
            scope = "" if v == "namespace" else '{namespace=~"$namespace"}'
            q = f"label_values({metric}{scope}, {v})"
            variables.append({
                "name": v, "label": v, "type": "query", "datasource": DS,
                "query": {"query": q, "refId": f"{v}-values"}, "definition": q,
                "includeAll": True, "multi": True, "allValue": ".*", "current": {},
                "refresh": 2, "sort": 1, "hide": 0, "options": [], "regex": "",
            })
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["confab"],
            "timezone": "",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["confab"], "asDropdown": True, "title": "Confab",
                       "includeVars": True, "keepTime": True}],
            "templating": {"list": variables},
            "panels": self.panels,
        }


def overview():
    b = Board("confab-overview", "Confab / Overview",
              "Is Confab healthy, is it keeping up: connections, message rate, latency, errors.")
    b.stat("Connections", "Open WebSocket sessions on all gateways.", "short",
           f"sum(confab_gateway_connections{sel()})")
    b.stat("Messages stored / s", "Sends the dispatchers stored.", "ops",
           rate("confab_dispatcher_records_total", 'command="send", outcome="ok"'))
    b.stat("Send → ack p99", "A send from acceptance by the gateway to its ack (stored).", "s",
           quantile(0.99, "confab_send_ack_duration_seconds"))
    b.stat("Ingress lag", "Ingress records not yet committed by the dispatchers (each partition once).", "short",
           f"sum(max by (partition) (confab_consumer_lag_records{sel()}))")
    b.row("Traffic")
    b.graph("Connections per gateway", "confab_gateway_connections: the gateways' autoscaling metric.", "short",
            [(f"sum by (pod) (confab_gateway_connections{sel()})", "{{pod}}")])
    b.graph("Messages and frames", "Stored sends; WebSocket frames in and out.", "ops", [
        (rate("confab_dispatcher_records_total", 'command="send", outcome="ok"'), "messages stored"),
        (rate("confab_frames_received_total"), "frames in"),
        (rate("confab_frames_sent_total"), "frames out"),
    ])
    b.row("Latency")
    b.graph("Send → ack latency", "confab_send_ack_duration_seconds quantiles.", "s", [
        (quantile(0.5, "confab_send_ack_duration_seconds"), "p50"),
        (quantile(0.9, "confab_send_ack_duration_seconds"), "p90"),
        (quantile(0.99, "confab_send_ack_duration_seconds"), "p99"),
    ])
    b.graph("Where a send's time goes (p99)", "Kafka produce, dispatcher batch, store group commit, push.", "s", [
        (quantile(0.99, "confab_bus_produce_duration_seconds"), "Kafka produce"),
        (quantile(0.99, "confab_dispatcher_batch_duration_seconds"), "dispatcher batch"),
        (quantile(0.99, "confab_store_operation_duration_seconds", extra='op="apply"'), "store apply"),
        (quantile(0.99, "confab_push_duration_seconds"), "push to gateway"),
    ])
    b.row("Errors and health")
    b.graph("Errors / s", "Client requests answered with an error; Kafka writes refused; store failures; "
            "pushes to gone gateways; frames dropped for slow clients.", "ops", [
        (rate("confab_requests_total", 'outcome!~"ok|pending"'), "request errors"),
        (rate("confab_bus_produce_errors_total"), "Kafka produce errors"),
        (rate("confab_store_errors_total"), "store errors"),
        (rate("confab_push_errors_total"), "push errors"),
        (rate("confab_outbound_queue_drops_total"), "slow-client drops"),
    ])
    b.graph("Processes up", "Scrape targets answering, by component.", "short",
            [(f"sum by (component) (up{sel()})", "{{component}}")])
    return b


def gateway():
    b = Board("confab-gateway", "Confab / Gateway", "Gateways: sessions, frames, requests, Kafka writes, delivery.",
              var_metric="confab_gateway_connections")
    b.row("Sessions")
    b.graph("Connections per pod", "confab_gateway_connections.", "short",
            [(f"sum by (pod) (confab_gateway_connections{sel()})", "{{pod}}")])
    b.graph("Sessions opened and closed / s", "Closed by reason: client_closed, connection_error, "
            "slow_consumer, token_expired, server_restart, idle, frame_too_large.", "ops", [
        (rate("confab_sessions_opened_total"), "opened"),
        (rate("confab_sessions_closed_total", by="reason"), "closed: {{reason}}"),
    ])
    b.graph("Frames / s", "WebSocket frames in and out, per pod.", "ops", [
        (rate("confab_frames_received_total", by="pod"), "in {{pod}}"),
        (rate("confab_frames_sent_total", by="pod"), "out {{pod}}"),
    ])
    b.graph("Auth failures / s", "Refused logins and tokens, by where.", "ops",
            [(rate("confab_auth_failures_total", by="where"), "{{where}}")])
    b.row("Requests")
    b.graph("Requests / s by op", "Client requests (ok, pending for writes the dispatcher answers, or an error).",
            "reqps", [(rate("confab_requests_total", by="op"), "{{op}}")])
    b.graph("Request errors / s", "Requests answered with an error code.", "reqps",
            [(rate("confab_requests_total", 'outcome!~"ok|pending"', by="op, outcome"), "{{op}} {{outcome}}")])
    b.graph("Send → ack latency", "From a send's acceptance to its ack.", "s", [
        (quantile(0.5, "confab_send_ack_duration_seconds"), "p50"),
        (quantile(0.99, "confab_send_ack_duration_seconds"), "p99"),
        (quantile(0.99, "confab_send_ack_duration_seconds", by="pod"), "p99 {{pod}}"),
    ])
    b.row("Kafka writes")
    b.graph("Kafka produce latency", "confab_bus_produce_duration_seconds: the bus accepting a client write.", "s", [
        (quantile(0.5, "confab_bus_produce_duration_seconds"), "p50"),
        (quantile(0.99, "confab_bus_produce_duration_seconds"), "p99"),
    ])
    b.graph("Kafka writes and errors / s", "Writes produced, and those Kafka did not accept in time.", "ops", [
        (rate("confab_bus_produce_duration_seconds_count"), "produced"),
        (rate("confab_bus_produce_errors_total"), "errors"),
    ])
    b.row("Delivery")
    b.graph("Deliveries / s", "Room events pushed to this gateway; event frames queued to local sessions.", "ops", [
        (rate("confab_gateway_room_events_received_total"), "room events received"),
        (rate("confab_gateway_deliveries_total"), "frames queued to sessions"),
    ])
    b.graph("Slow-client drops / s", "Frames dropped because a session's outbound queue was full.", "ops",
            [(rate("confab_outbound_queue_drops_total", by="pod"), "{{pod}}")])
    return b


def dispatcher():
    b = Board("confab-dispatcher", "Confab / Dispatcher and Kafka lag",
              "Dispatchers: consumer lag, throughput, batches, fan-out, pushes.",
              var_metric="confab_dispatcher_batch_records_count")
    b.row("Keeping up")
    b.graph("Consumer lag per partition", "confab_consumer_lag_records, as reported by the dispatcher owning "
            "the partition.", "short",
            [(f"max by (partition) (confab_consumer_lag_records{sel()})", "partition {{partition}}")])
    b.graph("Total lag and partitions owned", "The dispatchers' external autoscaling metric (each partition "
            "once), and how many partitions each dispatcher reports.", "short", [
        (f"sum(max by (partition) (confab_consumer_lag_records{sel()}))", "total lag"),
        (f"count by (pod) (confab_consumer_lag_records{sel()})", "partitions of {{pod}}"),
    ])
    b.graph("Records / s", "Ingress records processed, by command and outcome.", "ops",
            [(rate("confab_dispatcher_records_total", by="command, outcome"), "{{command}} {{outcome}}")])
    b.graph("Store retries and duplicates / s", "Group commits retried while the store failed; sends answered "
            "from an earlier (room, cid).", "ops", [
        (rate("confab_dispatcher_store_retries_total"), "store retries"),
        (rate("confab_dispatcher_duplicate_sends_total"), "duplicate sends"),
    ])
    b.row("Batches")
    b.graph("Batch size", "Records per group commit (mean, and p99 from the histogram's buckets).", "short", [
        (mean("confab_dispatcher_batch_records"), "mean"),
        (quantile(0.99, "confab_dispatcher_batch_records"), "p99"),
    ])
    b.graph("Batch duration", "Decide, group commit (retries included) and push.", "s", [
        (quantile(0.5, "confab_dispatcher_batch_duration_seconds"), "p50"),
        (quantile(0.99, "confab_dispatcher_batch_duration_seconds"), "p99"),
    ])
    b.row("Fan-out and pushes")
    b.graph("Fan-out", "Gateways one room event is pushed to.", "short", [
        (mean("confab_push_fanout_gateways"), "mean"),
        (quantile(0.99, "confab_push_fanout_gateways"), "p99"),
    ])
    b.graph("Push batch size", "Deliveries in one push to one gateway.", "short", [
        (mean("confab_push_batch_deliveries"), "mean"),
        (quantile(0.99, "confab_push_batch_deliveries"), "p99"),
    ])
    b.graph("Pushes / s", "Pushes to gateways, and those that found the gateway gone.", "ops", [
        (rate("confab_push_batches_total"), "pushes"),
        (rate("confab_push_errors_total"), "errors"),
    ])
    b.graph("Push duration", "One push to one gateway.", "s", [
        (quantile(0.5, "confab_push_duration_seconds"), "p50"),
        (quantile(0.99, "confab_push_duration_seconds"), "p99"),
    ])
    return b


def store():
    b = Board("confab-store", "Confab / Store", "The CQL store as gateways and dispatchers see it.")
    m = "confab_store_operation_duration_seconds"
    b.graph("Latency p99 by operation", "confab_store_operation_duration_seconds.", "s",
            [(quantile(0.99, m, by="op"), "{{op}}")])
    b.graph("Latency p50 by operation", "confab_store_operation_duration_seconds.", "s",
            [(quantile(0.5, m, by="op"), "{{op}}")])
    b.graph("Operations / s by operation", "", "ops", [(rate(f"{m}_count", by="op"), "{{op}}")])
    b.graph("Operations / s by component", "Gateways read (auth, history, membership); dispatchers write "
            "(apply) and decide.", "ops", [(rate(f"{m}_count", by="component"), "{{component}}")])
    b.graph("Mean latency by operation", "", "s",
            [(f"{rate(f'{m}_sum', by='op')} / {rate(f'{m}_count', by='op')}", "{{op}}")])
    b.graph("Errors / s by operation", "confab_store_errors_total.", "ops",
            [(rate("confab_store_errors_total", by="op"), "{{op}}")])
    return b


def operator():
    b = Board("confab-operator", "Confab / Operator", "The ChatCluster operator's reconciliations.",
              variables=("namespace",), var_metric="confab_operator_reconcile_runs_total")
    s = '{namespace=~"$namespace"}'
    b.graph("Reconciliations / s", "confab_operator_reconcile_runs_total.", "ops",
            [(f"sum(rate(confab_operator_reconcile_runs_total{s}[{RI}]))", "runs")])
    b.graph("Reconcile errors / s by reason", "confab_operator_reconcile_errors_total.", "ops",
            [(f"sum by (reason) (rate(confab_operator_reconcile_errors_total{s}[{RI}]))", "{{reason}}")])
    b.graph("Reconcile duration", "confab_operator_reconcile_duration_seconds.", "s", [
        (f"histogram_quantile(0.5, sum by (le) (rate(confab_operator_reconcile_duration_seconds_bucket{s}[{RI}])))",
         "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(confab_operator_reconcile_duration_seconds_bucket{s}[{RI}])))",
         "p99"),
    ])
    b.graph("Reconciliations in total", "Runs and errors since the operator started, per pod.", "short", [
        (f"sum by (pod) (confab_operator_reconcile_runs_total{s})", "runs {{pod}}"),
        (f"sum by (pod) (confab_operator_reconcile_errors_total{s})", "errors {{pod}}"),
    ])
    return b


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for board in (overview(), gateway(), dispatcher(), store(), operator()):
        path = OUT / f"{board.uid.removeprefix('confab-')}.json"
        text = json.dumps(board.json(), indent=2, ensure_ascii=False) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        sys.exit("stale dashboards (run python3 charts/tools/dashboards.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
