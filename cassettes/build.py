"""Write vault_list.yaml and vault_details.yaml: vcrpy cassettes in the Hyperliquid API's real shapes.

Run `.venv/bin/python cassettes/build.py`; every run writes the same bytes.

Real, from samples/ (each with a .source.txt): the Snipe Trading raw list entry; summary fields and apr of the first
five and the eight largest vaults of the 2025-12-30 stats list; the official docs' HLP vaultDetails example; HLP
Strategy B's portfolio, spliced in byte for byte; the info host's response headers. Synthetic, from fixed seeds: the
other pnls, portfolios and followers, the `relationship` objects (the derived list dropped them), HLP Liquidator's
values, the made-up vaults covering odd names and closed, zero and huge values, and the 429's `Retry-After`.

One real value is changed on purpose: HLP Liquidator 2's tvl is divided by 10 (real: 30000000.0000009984), so that the
five highest-tvl open vaults of the list are exactly the five that vault_details.yaml answers (DETAILED).

vault_details_open.yaml answers every other open vault of the list, so that a replayed sync-vault-details stores
every open vault but the Ghost (null on purpose) and passes the default INGEST_MAX_BAD_FRACTION. Each answer has the
vault's own address, name, leader, relationship and apr from the list and its tvl as the last account value; the rest
is synthetic, seeded by the address, in the shape of the real answers above: the docs example's keys in its order,
the real portfolio's 8 periods and point counts (day 13, week 64, month 45; allTime about one point per 11 days of the
vault's life, as HLP Strategy B's 76 over 835 days), and a short followers list (the cap of ~100 binds big vaults).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import httpx
import yaml

from vault_ingest.hyperliquid.client import USER_AGENT

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"
STATS_URL = "https://stats-data.hyperliquid.xyz/Mainnet/vaults"
INFO_URL = "https://api.hyperliquid.xyz/info"

LIST_LAST_MODIFIED = datetime(2025, 12, 30, 3, 0, 41, tzinfo=timezone.utc)  # after the newest createTimeMillis
LIST_FETCHED = datetime(2025, 12, 30, 3, 12, 9, tzinfo=timezone.utc)
DETAILS_FETCHED = datetime(2025, 12, 30, 3, 14, 5, tzinfo=timezone.utc)

HLP = "0xdfc24b077bc1425ad1dea75bcb6f8158e10df303"
HLP_A = "0x010461c14e146ac35fe42271bdc1134ee31c703a"
HLP_B = "0x31ca8395cf837de08b24da3f660e77761dfb974b"
HLP_LIQUIDATOR = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"
HLP_LIQUIDATOR_2 = "0xb0a55f13d22f66e6d495ac98113841b2326e9540"
HLP_CHILDREN = sorted([HLP_A, HLP_B, HLP_LIQUIDATOR, HLP_LIQUIDATOR_2])
GROWI = "0x1e37a337ed460039d1b15bd3bc489de789768d5e"
MALFORMED_ADDRESS = "0xnot-an-address"
REJECTED_BODY = "Failed to deserialize the JSON body into the target type"


def address(label: str) -> str:
    return "0x" + hashlib.sha256(label.encode()).hexdigest()[:40]


GHOST = address("ghost basis fund")  # listed and open, but vaultDetails answers null
DETAILED = [HLP, HLP_B, HLP_A, GROWI, GHOST]  # by tvl, highest first

# (name, tvl, isClosed, apr): the made-up vaults, for odd names and values the real samples lack.
SYNTHETIC = [
    ("Ghost Basis Fund", "4913207.5", False, 0.041237),
    ("🚀 Moon Mission 🌕", "1523.440912", False, 1.287312),
    ("量化对冲一号", "88210.551201", False, 0.1843),
    ("ハイパー戦略", "0.0", True, 0.0),
    ('The "Best" Vault', "12034.009", False, -0.0512),
    ("It's Alpha O'Clock", "501.25", False, 0.0),
    ("Delta-Neutral Funding Rate Arbitrage with Dynamic Hedging and Volatility Targeting Across "
     "Perpetual Markets, Season Two", "2300.5", False, 0.0871),
    ("", "0.0", True, 0.0),
    ("   ", "250.000001", False, 0.0),
    ("  padded name  ", "77.7", False, -0.0034),
    ("صندوق الأمل", "640.12", False, 0.2231),
    ("👨‍👩‍👧 Family Office", "3150.0", False, 0.0152),
    ("Robert'); DROP TABLE vaults;--", "0.0", True, 0.0),
    ("back\\slash \\n not a newline", "10.0", False, 0.0),
    ("Whale Test", "98765432109876543210.123456789012345678", True, 0.0),
    ("Dust", "0.000001", True, 0.0),
    ("Fresh Start", "0.0", False, 0.0),
    ("Degen Leverage", "4200.0", False, 5.35),
    ("Rekt Capital", "12.5", False, -0.9999),
    ("BTC Trend", "45000.0", False, 0.3120448),
    ("ETH Mean Reversion", "0.0", True, 0.0),
    ("Market Neutral 3", "150000.75", False, 0.0721),
    ("Grid Bot Ω", "9876.54321", False, -0.0101),
    ("Sniper 🎯", "0.0", True, 0.0),
    ("Test", "0.000002", True, 0.0),
]


def millis(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def decimal_text(value: Decimal, places: int) -> str:
    """Like the API: rounded, trailing zeros dropped, but always one fractional digit ("0.0", "12.5")."""
    text = f"{value:.{places}f}".rstrip("0")
    text = text + "0" if text.endswith(".") else text
    return "0.0" if text == "-0.0" else text


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- the stats list ---------------------------------------------------------------------------------------------


def pnls(rng: random.Random, tvl: Decimal, dormant: bool) -> list:
    """`pnls` as the stats list has them: cumulative 2-decimal strings from "0.0", no timestamps."""
    scale = max(float(tvl) * 0.004, 1.0)
    result = []
    for window, count in (("day", 13), ("week", 12), ("month", 13), ("allTime", rng.randint(7, 13))):
        values, total = ["0.0"], 0.0
        for _ in range(count - 1):
            total += 0.0 if dormant and window != "allTime" else rng.gauss(0, scale)
            values.append(f"{Decimal(repr(total)):.2f}" if total else "0.0")
        result.append([window, values])
    return result


def list_entry(apr: float, pnl: list, summary: dict) -> dict:
    return {"apr": apr, "pnls": pnl, "summary": summary}


def summary(name: str, vault: str, leader: str, tvl: str, closed: bool, relationship: dict, created: int) -> dict:
    return {
        "name": name,
        "vaultAddress": vault,
        "leader": leader,
        "tvl": tvl,
        "isClosed": closed,
        "relationship": relationship,
        "createTimeMillis": created,
    }


def relationship_of(vault: str) -> dict:
    if vault == HLP:
        return {"type": "parent", "data": {"childAddresses": HLP_CHILDREN}}
    return {"type": "child"} if vault in HLP_CHILDREN else {"type": "normal"}


def vault_list_entries() -> list[dict]:
    snipe = json.loads((SAMPLES / "stats_vaults_raw_entry_snipe_trading.json").read_text())[0]
    derived = json.loads((SAMPLES / "stats_vaults_DERIVED_flattened_summary_subset_2025-12-30.json").read_text())
    entries = [snipe]
    for raw in derived["first_5_in_file_order"][1:] + derived["top_8_by_tvl"]:
        raw = dict(raw)
        if raw["vaultAddress"] == HLP_LIQUIDATOR_2:
            raw["tvl"] = str(Decimal(raw["tvl"]) / 10)
        rng = random.Random(raw["vaultAddress"])
        tvl = Decimal(raw["tvl"])
        entries.append(list_entry(raw["apr"], pnls(rng, tvl, raw["isClosed"]), summary(
            raw["name"], raw["vaultAddress"], raw["leader"], raw["tvl"], raw["isClosed"],
            relationship_of(raw["vaultAddress"]), raw["createTimeMillis"],
        )))
    entries.append(list_entry(0.0, pnls(random.Random(HLP_LIQUIDATOR), Decimal("999999.999999"), False), summary(
        "HLP Liquidator", HLP_LIQUIDATOR, HLP, "999999.999999", False, {"type": "child"}, 1683243602101,
    )))
    start, end = millis(datetime(2023, 6, 1, tzinfo=timezone.utc)), millis(LIST_LAST_MODIFIED - timedelta(days=1))
    for name, tvl, closed, apr in SYNTHETIC:
        vault = GHOST if name == "Ghost Basis Fund" else address(f"vault {name!r}")
        rng = random.Random(vault)
        entries.append(list_entry(apr, pnls(rng, Decimal(tvl), closed), summary(
            name, vault, address(f"leader {name!r}"), tvl, closed, {"type": "normal"}, rng.randint(start, end),
        )))
    return sorted(entries, key=lambda entry: entry["summary"]["vaultAddress"])


# --- vaultDetails -----------------------------------------------------------------------------------------------


def series(rng: random.Random, start: int, end: int, count: int, final: Decimal, from_zero: bool,
           quiet: bool = False) -> tuple[list, list]:
    """accountValueHistory and pnlHistory of one window: `count` points from `start` to `end` ms, the last at `end`.
    A quiet vault does not trade: its account value stays put and its PnL at 0."""
    step = (end - start) / (count - 1)
    times = [start + int(i * step) // 60000 * 60000 + rng.randint(0, 130) for i in range(count - 1)] + [end]
    values = [float(final)]
    for _ in range(count - 1):
        values.append(values[-1] * (1 + (0.0 if quiet else rng.gauss(0, 0.004))))
    values.reverse()
    if from_zero:
        values[0] = 0.0
    pnl, total = [], 0.0
    for i, when in enumerate(times):
        total += rng.gauss(0, float(final) * 0.0007) if i and not quiet else 0.0
        pnl.append([when, decimal_text(Decimal(repr(total)), 6)])
    accounts = [[when, decimal_text(Decimal(repr(value)), 10)] for when, value in zip(times, values)]
    accounts[-1][1] = str(final)  # the list's tvl, to the last digit
    return accounts, pnl


def portfolio(vault: str, final: Decimal, created: int, all_time_points: int, quiet: bool = False) -> str:
    """8 periods like the real one: day/week/month equal their perp twins; perpAllTime starts later than allTime."""
    rng = random.Random(f"portfolio {vault}")
    end = millis(DETAILS_FETCHED) - 2004
    windows = {}
    for period, count, span in (("day", 13, timedelta(hours=25.2)), ("week", 64, timedelta(days=7, hours=4)),
                                ("month", 45, timedelta(days=30.5))):
        windows[period] = series(rng, end - int(span.total_seconds() * 1000), end, count, final, False, quiet)
    windows["allTime"] = series(rng, created, end, all_time_points, final, True, quiet)
    perp_start = created + (end - created) // 3
    windows["perpAllTime"] = series(rng, perp_start, end, all_time_points - 4, final, True, quiet)
    volume = {period: Decimal(repr(rng.uniform(0.2, 3.0) * float(final) * days * (not quiet))) for period, days in
              (("day", 1), ("week", 7), ("month", 30), ("allTime", 600), ("perpAllTime", 400))}
    result = []
    for period in ("day", "week", "month", "allTime", "perpDay", "perpWeek", "perpMonth", "perpAllTime"):
        source = period if period in windows else period[4:].lower()
        accounts, pnl = windows[source]
        result.append([period, {"accountValueHistory": accounts, "pnlHistory": pnl,
                                "vlm": decimal_text(volume[source], 10)}])
    return compact(result)


def follower(rng: random.Random, user: str, equity: Decimal, lockup: timedelta) -> dict:
    days = rng.randint(1, 700)
    entry = millis(DETAILS_FETCHED - timedelta(days=days, milliseconds=rng.randint(0, 86399999)))
    last_deposit = millis(DETAILS_FETCHED - timedelta(milliseconds=rng.randint(0, days * 86400000)))
    return {
        "user": user,
        "vaultEquity": decimal_text(equity, 8),
        "pnl": decimal_text(equity * Decimal(repr(rng.uniform(-0.05, 0.08))), 8),
        "allTimePnl": decimal_text(equity * Decimal(repr(rng.uniform(-0.3, 0.6))), 8),
        "daysFollowing": days,
        "vaultEntryTime": entry,
        "lockupUntil": last_deposit + int(lockup.total_seconds() * 1000),
    }


def followers(vault: str, tvl: Decimal, leader_fraction: float | None, others: int, lockup: timedelta) -> list[dict]:
    """The leader's row (if any), then the largest depositors: the API lists about 100 besides the leader."""
    rng = random.Random(f"followers {vault}")
    rows = [] if leader_fraction is None else [follower(rng, "Leader", tvl * Decimal(repr(leader_fraction)), lockup)]
    equity = tvl * Decimal("0.03")
    for i in range(others):
        equity *= Decimal(repr(rng.uniform(0.85, 0.99)))
        rows.append(follower(rng, address(f"depositor {i} of {vault}"), equity, lockup))
    return rows


def details(name: str, vault: str, leader: str, description: str, portfolio_json: str, **fields: object) -> str:
    """A vaultDetails body, keys in the order the API sends them, with the portfolio spliced in as given."""
    body = {"name": name, "vaultAddress": vault, "leader": leader, "description": description,
            "portfolio": "PORTFOLIO", **fields}
    return compact(body).replace('"portfolio":"PORTFOLIO"', f'"portfolio":{portfolio_json}', 1)


def hlp_details(list_tvl: dict[str, Decimal]) -> str:
    docs = json.loads((SAMPLES / "info_vaultDetails_HLP_official_docs_example.json").read_text())
    rows = [docs["followers"][0]] + followers(HLP, list_tvl[HLP], None, 99, timedelta(days=4))
    return details(
        "Hyperliquidity Provider (HLP)", HLP, docs["leader"], docs["description"],
        portfolio(HLP, list_tvl[HLP], 1683243596849, 90),
        apr=docs["apr"], followerState=None, leaderFraction=docs["leaderFraction"],
        leaderCommission=docs["leaderCommission"], followers=rows, maxDistributable=docs["maxDistributable"],
        maxWithdrawable=docs["maxWithdrawable"], isClosed=False,
        relationship={"type": "parent", "data": {"childAddresses": HLP_CHILDREN}}, allowDeposits=True,
        alwaysCloseOnWithdraw=False,
    )


def child_details(name: str, vault: str, portfolio_json: str, tvl: Decimal, apr: float) -> str:
    return details(
        name, vault, HLP, "", portfolio_json, apr=apr, followerState=None, leaderFraction=1.0, leaderCommission=0,
        followers=followers(vault, tvl, 1.0, 0, timedelta(days=4)), maxDistributable=float(tvl) * 0.31,
        maxWithdrawable=0.0, isClosed=False, relationship={"type": "child"}, allowDeposits=False,
        alwaysCloseOnWithdraw=False,
    )


def growi_details(tvl: Decimal, apr: float) -> str:
    return details(
        "Growi HF", GROWI, "0x7789450871fb1315fa982ccb8039cb34e8f2f60d",
        "Systematic high-frequency strategies across the most liquid perps. Synthetic description for tests.",
        portfolio(GROWI, tvl, 1720440504732, 60),
        apr=apr, followerState=None, leaderFraction=0.0619204417853011, leaderCommission=0.1,
        followers=followers(GROWI, tvl, 0.0619204417853011, 100, timedelta(days=1)),
        maxDistributable=float(tvl) * 0.42, maxWithdrawable=float(tvl) * 0.051, isClosed=False,
        relationship={"type": "normal"}, allowDeposits=True, alwaysCloseOnWithdraw=False,
    )


def open_vault_details(entry: dict) -> str:
    """A vaultDetails body for one open vault of the list that the real samples do not cover."""
    summary_ = entry["summary"]
    vault, tvl, created = summary_["vaultAddress"], Decimal(summary_["tvl"]), summary_["createTimeMillis"]
    rng = random.Random(f"details {vault}")
    age_days = (millis(DETAILS_FETCHED) - created) // 86_400_000
    # The list's apr of 0 (and no trading to show) makes a quiet vault: a flat account value, PnL 0, no volume.
    quiet = entry["apr"] == 0 and summary_["relationship"]["type"] == "normal"
    history = portfolio(vault, tvl, created, max(6, min(90, age_days // 11 + 1)), quiet)
    if summary_["relationship"]["type"] == "child":
        return child_details(summary_["name"], vault, history, tvl, entry["apr"])
    # The leader keeps at least 5 % (hyperliquid.md, vault rules); small vaults are mostly the leader's money.
    leader_fraction = 1.0 if tvl < 100 else round(rng.uniform(0.05, 0.6), 16)
    depositors = 0 if leader_fraction == 1.0 else min(100, int(tvl.adjusted() * rng.uniform(2, 5)))
    return details(
        summary_["name"], vault, summary_["leader"], rng.choice(DESCRIPTIONS), history,
        apr=entry["apr"], followerState=None, leaderFraction=leader_fraction, leaderCommission=0.1,
        followers=followers(vault, tvl, leader_fraction, depositors, timedelta(days=1)),
        maxDistributable=round(float(tvl) * rng.uniform(0.2, 0.9), 6),
        maxWithdrawable=round(float(tvl) * rng.uniform(0.0, 0.1), 6), isClosed=False,
        relationship=summary_["relationship"], allowDeposits=rng.random() < 0.9,
        alwaysCloseOnWithdraw=rng.random() < 0.2,
    )


DESCRIPTIONS = [
    "",
    "Trend following on the majors, one position at a time. Synthetic description for tests.",
    "Delta-neutral funding capture. Withdrawals may take a day to unwind. Synthetic description for tests.",
    "Discretionary swing trades on BTC and ETH perps. Synthetic description for tests.",
]


# --- HTTP and YAML ----------------------------------------------------------------------------------------------


def request(method: str, url: str, payload: dict | None = None) -> dict:
    """A request as HyperliquidClient sends it; the body is httpx's own `json=` encoding, byte for byte."""
    body = httpx.Request(method, url, json=payload).content.decode() if payload is not None else ""
    headers = {"accept": ["*/*"], "accept-encoding": ["gzip, deflate"], "connection": ["keep-alive"],
               "host": [httpx.URL(url).host], "user-agent": [USER_AGENT]}
    if payload is not None:
        headers |= {"content-length": [str(len(body.encode()))], "content-type": ["application/json"]}
    return {"body": body, "headers": headers, "method": method, "uri": url}


def info_response(status: int, message: str, body: str, content_type: str, extra: dict | None = None) -> dict:
    """Headers as the real info host sends them (nginx behind CloudFront), from the SDK's recordings."""
    seed = hashlib.sha256(body.encode()).digest()
    headers = {
        "Connection": ["keep-alive"], "Content-Length": [str(len(body.encode()))], "Content-Type": [content_type],
        "Date": [format_datetime(DETAILS_FETCHED, usegmt=True)], "Server": ["nginx/1.22.1"],
        "Via": [f"1.1 {seed[:16].hex()}.cloudfront.net (CloudFront)"],
        "X-Amz-Cf-Id": [base64.urlsafe_b64encode(seed + seed[:8]).decode()[:54] + "=="],
        "X-Amz-Cf-Pop": ["FRA60-P5"], "X-Cache": ["Miss from cloudfront" if status == 200 else "Error from cloudfront"],
        "access-control-allow-origin": ["*"], "access-control-expose-headers": ["*"],
        "vary": ["origin", "access-control-request-method", "access-control-request-headers"],
        **(extra or {}),
    }
    return {"body": {"string": body}, "headers": headers, "status": {"code": status, "message": message}}


def list_response(body: str) -> dict:
    headers = {
        "Accept-Ranges": ["bytes"], "Age": ["728"], "Connection": ["keep-alive"],
        "Content-Length": [str(len(body.encode()))], "Content-Type": ["application/json"],
        "Date": [format_datetime(LIST_FETCHED, usegmt=True)],
        "ETag": [f'"{hashlib.md5(body.encode()).hexdigest()}"'],
        "Last-Modified": [format_datetime(LIST_LAST_MODIFIED, usegmt=True)], "Server": ["AmazonS3"],
        "Via": ["1.1 6d1e5f1a0a2b3c4d5e6f708192a3b4c5.cloudfront.net (CloudFront)"],
        "X-Amz-Cf-Pop": ["FRA60-P5"], "X-Cache": ["Hit from cloudfront"],
    }
    return {"body": {"string": body}, "headers": headers, "status": {"code": 200, "message": "OK"}}


def write_cassette(name: str, interactions: list[tuple[dict, dict]]) -> None:
    data = {"interactions": [{"request": req, "response": resp} for req, resp in interactions], "version": 1}
    text = yaml.safe_dump(data, allow_unicode=True, width=120)
    assert yaml.safe_load(text) == data, f"{name}: YAML does not read back as written"
    (HERE / name).write_text(text, encoding="utf-8")


def ok(body: str) -> dict:
    return info_response(200, "OK", body, "application/json")


def vault_details_request(vault: str) -> dict:
    return request("POST", INFO_URL, {"type": "vaultDetails", "vaultAddress": vault})


def main() -> None:
    entries = vault_list_entries()
    list_body = compact(entries)
    write_cassette("vault_list.yaml", [(request("GET", STATS_URL), list_response(list_body))])

    by_address = {entry["summary"]["vaultAddress"]: entry for entry in entries}
    tvl = {vault: Decimal(entry["summary"]["tvl"]) for vault, entry in by_address.items()}
    open_by_tvl = sorted((v for v, e in by_address.items() if not e["summary"]["isClosed"]), key=tvl.get, reverse=True)
    assert open_by_tvl[:5] == DETAILED, open_by_tvl[:5]

    real_b_portfolio = (SAMPLES / "info_portfolio_vault_0x31ca83_hlp_child.json").read_text()
    write_cassette("vault_details.yaml", [
        (vault_details_request(HLP), ok(hlp_details(tvl))),
        (vault_details_request(HLP_B), ok(child_details(
            "HLP Strategy B", HLP_B, real_b_portfolio, tvl[HLP_B], by_address[HLP_B]["apr"]))),
        (vault_details_request(HLP_A), info_response(429, "Too Many Requests", "", "text/plain; charset=utf-8",
                                                     {"Retry-After": ["2"]})),
        (vault_details_request(HLP_A), ok(child_details(
            "HLP Strategy A", HLP_A, portfolio(HLP_A, tvl[HLP_A], 1683243598416, 76), tvl[HLP_A],
            by_address[HLP_A]["apr"]))),
        (vault_details_request(GROWI), ok(growi_details(tvl[GROWI], by_address[GROWI]["apr"]))),
        (vault_details_request(GHOST), ok("null")),
        (vault_details_request(MALFORMED_ADDRESS),
         info_response(422, "Unprocessable Entity", REJECTED_BODY, "text/plain; charset=utf-8")),
    ])
    others = [by_address[vault] for vault in open_by_tvl if vault not in DETAILED]
    write_cassette("vault_details_open.yaml", [
        (vault_details_request(entry["summary"]["vaultAddress"]), ok(open_vault_details(entry))) for entry in others
    ])
    print(f"vault_details_open.yaml: {len(others)} more open vaults")
    print(f"vault_list.yaml: {len(entries)} vaults, {len(open_by_tvl)} open; top 5 open by tvl: {DETAILED}")


if __name__ == "__main__":
    main()
