"""Alert rules and the Grafana dashboard name only metrics the processes export.

The exported names are collected by instantiating each process's metrics objects in fresh
registries (prometheus-client adds ``_total`` to counters and ``_bucket``/``_sum``/``_count`` to
histograms); the names used are parsed out of every PromQL expression. PromQL is not executed;
where ``promtool`` is installed, the rules (and the dashboard's queries, as recording rules) are
also checked by it.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "config" / "prometheus" / "gridpay-alerts.yml"
SCRAPE = ROOT / "config" / "prometheus" / "prometheus.example.yml"
DASHBOARD = ROOT / "config" / "grafana" / "gridpay-dashboard.json"

# Series Prometheus makes itself for every target (not exported by any process).
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
             "scrape_samples_post_metric_relabeling"}

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile", "limitk", "limit_ratio"}
KEYWORDS = AGGREGATIONS | {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
                           "or", "unless", "atan2", "inf", "nan", "le", "start", "end"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*(\(|\{|\[|$|[\s)+\-*/%^=!<>,]))")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not being functions, keywords, label
    names (matchers, by/without/on/ignoring lists), strings or durations."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("{}", text)           # label matchers (after strings, so "}" in a string is gone)
    text = _BRACKETS.sub("[]", text)         # ranges and subqueries: [5m], [1h:1m], [$__rate_interval]
    text = _LABEL_LISTS.sub(r"\1 ()", text)  # by (le, bank) ...
    names = set()
    for match in _IDENT.finditer(text):
        name, follower = match.group(1), match.group(2)
        if follower == "(":                  # a function call: rate(, histogram_quantile(, sum(
            continue
        if name in KEYWORDS:
            continue
        names.add(name)
    return names


def test_the_parser_finds_metric_names_and_nothing_else():
    expr = ('histogram_quantile(0.99, sum by (le, bank) (rate(gridpay_transaction_seconds_bucket{bank=~"01.*",'
            'mti!="0800"}[5m]))) > 1 and on (bank) sum without (instance) (gridpay_connections) == 0 '
            'or max(gridpay_db_up offset 5m) < bool 1 unless up{job="x"} == 0 '
            'or sum(rate(a_total[$__rate_interval] @ end())) / ignoring (le) group_left b:recorded')
    assert metric_names(expr) == {"gridpay_transaction_seconds_bucket", "gridpay_connections", "gridpay_db_up",
                                  "up", "a_total", "b:recorded"}
    assert metric_names('gridpay_x_total{reason="by (le) sum("}') == {"gridpay_x_total"}
    assert metric_names("count_values(\"v\", gridpay_y) * 1e3 - 2.5") == {"gridpay_y"}


def _instantiate(cls):
    registry = CollectorRegistry()
    for make in (lambda: cls(registry), lambda: cls(registry=registry)):
        try:
            obj = make()
        except TypeError:
            continue
        return getattr(obj, "registry", None) or registry
    return None


def _add_metrics_of(module_name: str, registries: list) -> None:
    from engines.link import PrometheusLinkMetrics

    module = importlib.import_module(module_name)
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if name.endswith("Metrics") and cls.__module__ == module.__name__ and name != "LinkMetrics" \
                and cls is not PrometheusLinkMetrics:
            registry = _instantiate(cls)
            if registry is not None:
                registries.append(registry)


def exported_metric_names() -> set[str]:
    """Every series name the gridpay processes' metrics objects can produce."""
    from engines.link import PrometheusLinkMetrics
    from gateway.gateway_metrics import GatewayMetrics

    registries = [GatewayMetrics().registry]
    link_registry = CollectorRegistry()
    PrometheusLinkMetrics(link_registry)
    registries.append(link_registry)
    # The notifier's, the engines', the scheduler's, the watcher's, the collection rate's, the API's and
    # the log-in refusals' metrics classes: any *Metrics class defined in these packages (besides the
    # link's no-op base) that takes a registry.
    for package in ("engines", "ledger", "ledger/recon", "ledger/identity", "runtime", "api"):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.stem != "__init__":
                _add_metrics_of(f"{package.replace('/', '.')}.{path.stem}", registries)
    names = set()
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "summary": ["", "_sum", "_count", "_created"], "gauge": [""], "info": ["_info"],
                "stateset": [""], "enum": [""], "gaugehistogram": ["_bucket", "_gsum", "_gcount"], "unknown": [""]}
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + s for s in suffixes[family.type])
    return names


def test_exported_names_include_every_process():
    names = exported_metric_names()
    assert {"gridpay_transactions_total", "gridpay_transaction_seconds_bucket", "gridpay_db_up"} <= names  # gateway
    assert {"gridpay_debit_connections_ready", "gridpay_debit_timeouts_total"} <= names  # debit links
    assert {"gridpay_outbox_backlog", "gridpay_notices_sent_total"} <= names  # notifier
    assert {"gridpay_collection_rate", "gridpay_collection_target_ratio"} <= names  # collection-rate exporter
    assert "gridpay_transactions" not in names  # a counter's bare name is not a series


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(doc["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in doc.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        if var.get("type") == "query":
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", query) or re.fullmatch(
                r"\s*(?:query_result|metrics)\((.*)\)\s*", query)
            out.append((f"variable {var['name']}", m.group(1) if m else query))
    return out


def test_alert_rules_parse_and_are_complete():
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/runbook.md#"), rule["alert"]


def test_alert_runbook_links_point_at_runbook_sections():
    sections = anchors((ROOT / "docs" / "runbook.md").read_text(encoding="utf-8"))
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in sections, f"{rule['alert']}: docs/runbook.md has no section #{anchor}"


def test_alerts_cover_the_required_conditions():
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    used = set().union(*(metric_names(e) for e in exprs.values()))
    assert {"gridpay_bank_signed_on", "gridpay_debit_connections_ready"} <= used      # bank link down / signed off
    assert "gridpay_db_up" in used                                                    # database unreachable
    assert "gridpay_outbox_oldest_age_seconds" in used                                # outbox backlog
    assert "gridpay_transaction_seconds_bucket" in used                               # latency
    assert any("response_code" in e and "/" in e for e in exprs.values())             # error rate
    assert any('mti=~"0420|0421"' in e for e in exprs.values())                       # reversals unanswered
    assert "gridpay_debit_reversals" in used                                          # ... and left open
    assert "gridpay_debit_oldest_ready_chunk_age_seconds" in used                     # stuck batches
    assert "gridpay_recon_oldest_open_item_age_seconds" in used                       # recon open past a day


def test_alert_rules_name_only_exported_metrics():
    exported = exported_metric_names() | SYNTHETIC
    unknown = {}
    for rule in alert_rules():
        missing = metric_names(rule["expr"]) - exported
        if missing:
            unknown[rule["alert"]] = sorted(missing)
    assert not unknown, f"metrics no process exports: {unknown}"


def test_dashboard_parses_and_names_only_exported_metrics():
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert doc["uid"] and doc["title"] and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    exported = exported_metric_names() | SYNTHETIC
    queries = dashboard_queries()
    assert len(queries) >= 20
    unknown = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        if names - exported:
            unknown[where] = sorted(names - exported)
    assert not unknown, f"metrics no process exports: {unknown}"


def test_every_exported_metric_is_on_the_dashboard():
    """A metric a process bothers to export is worth a panel; _created series are not."""
    used = set().union(*(metric_names(e) for _, e in dashboard_queries()))
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    exported = {n for n in exported_metric_names() if not n.endswith("_created")}
    missing = {n for n in exported if re.sub(r"_(total|bucket|sum|count)$", "", n) not in bases}
    assert not missing, f"exported but on no dashboard panel: {sorted(missing)}"


def test_scrape_config_jobs_match_the_rules():
    doc = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in doc["scrape_configs"]}
    assert {"gridpay-gateway", "gridpay-notifier"} <= jobs
    rules_text = RULES.read_text(encoding="utf-8")
    assert 'job=~"gridpay-.*"' in rules_text


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path):
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"gridpay:dashboard:{i}", "expr": expr.replace("$__rate_interval", "5m").replace("$bank", ".*")}
        for i, (_, expr) in enumerate(dashboard_queries())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(recording))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([PROMTOOL, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
