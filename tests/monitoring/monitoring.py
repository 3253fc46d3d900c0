"""What the monitoring tests share: the shipped dashboards and rules, their
PromQL expressions, template substitution and metric-name extraction."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "packaging" / "grafana"
PROMETHEUS_DIR = ROOT / "packaging" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
PROMTOOL = "/usr/bin/promtool"

# Series Prometheus makes itself for every target: allowed without being on /metrics.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
             "scrape_series_added"}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                "unless", "inf", "nan", "atan2", "le"}


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def panels(board: dict) -> list[dict]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep theirs inside
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and every query variable."""
    out = []
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                out.append((f"{name}: {panel['title']} [{target['refId']}]", target["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{name}: variable {var['name']}", var["definition"]))
    return out


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's template variables, as Grafana would expand them for one choice."""
    expr = expr.replace("$__rate_interval", "30s").replace("$__interval", "5s").replace("$__range", "5m")
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def label_values_query(definition: str) -> str:
    """label_values(SELECTOR, label) is a Grafana function: Prometheus is asked for SELECTOR."""
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", definition.strip())
    assert match, definition
    return match.group(1)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (no parser in Python: strip what is not a name)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # strings
    text = re.sub(r"\{[^}]*\}", "", text)                        # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                        # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        if re.fullmatch(r"\d*e\d+", word):
            continue
        names.add(word)
    return names


def strip_comparison(expr: str) -> str:
    """The alert's value before its threshold: `A > 0.9` -> `A`."""
    stripped = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[-+]?[0-9.]+(e[-+]?\d+)?\s*$", "", expr.strip())
    assert stripped != expr.strip(), f"no trailing comparison in {expr}"
    return stripped
