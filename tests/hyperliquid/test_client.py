"""HyperliquidClient over real httpx: replayed cassettes for recorded answers, MockTransport for the faults."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest
import yaml

from tests.cassette import CASSETTES, use_cassette
from vault_ingest.errors import (
    CircuitOpenError,
    HTTPStatusError,
    MalformedResponseError,
    RequestRejectedError,
    RetriesExhaustedError,
    TransportError,
)
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.limiter import WeightLimiter
from vault_ingest.hyperliquid.models import PERIODS

API = "https://api.hyperliquid.xyz"
STATS = "https://stats-data.hyperliquid.xyz/Mainnet/vaults"
HLP = "0xdfc24b077bc1425ad1dea75bcb6f8158e10df303"
HLP_A = "0x010461c14e146ac35fe42271bdc1134ee31c703a"
HLP_B = "0x31ca8395cf837de08b24da3f660e77761dfb974b"
HLP_LIQUIDATOR_2 = "0xb0a55f13d22f66e6d495ac98113841b2326e9540"
GROWI = "0x1e37a337ed460039d1b15bd3bc489de789768d5e"
GHOST = "0x80ace6ef6bc7406c0c001de3ffafdf8cb1133e6a"
UTC = timezone.utc


class RecordingLimiter(WeightLimiter):
    """The real limiter on simulated time: its waits are recorded and move its clock, so no test really waits."""

    def __init__(self, budget: int = 1200) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        super().__init__(budget, clock=lambda: self.now, sleep=self._sleep_fake)
        self.acquired: list[int] = []

    async def _sleep_fake(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def acquire(self, weight: int) -> None:
        self.acquired.append(weight)
        await super().acquire(weight)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(transport: httpx.AsyncBaseTransport | None = None, **kwargs) -> HyperliquidClient:
    kwargs.setdefault("limiter", RecordingLimiter())
    kwargs.setdefault("sleep", Sleeps())
    return HyperliquidClient(API, STATS, transport=transport, **kwargs)


def call(hl: HyperliquidClient, method: str, *args):
    async def go():
        async with hl:
            return await getattr(hl, method)(*args)

    return asyncio.run(go())


def answering(*responses: httpx.Response | Exception):
    """A MockTransport giving these answers in turn (the last one forever), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def summary_entry(address: str, **summary) -> dict:
    return {"apr": 0.1, "pnls": [["day", ["0.0", "1.5"]]], "summary": {
        "name": "v", "vaultAddress": address, "leader": "0x" + "11" * 20, "tvl": "1.5", "isClosed": False,
        "relationship": {"type": "normal"}, "createTimeMillis": 1700000000000, **summary}}


# --- the vault list -------------------------------------------------------------------------------------------


def vault_list(hl: HyperliquidClient) -> tuple[list, list, datetime]:
    """The client's list fetch, its parse taken whole: the vaults, the skipped entries' errors, the snapshot time."""
    parse, observed_at = call(hl, "vault_list")
    return list(parse), parse.errors, observed_at


def test_vault_list_from_the_cassette():
    with use_cassette("vault_list") as cassette:
        vaults, errors, observed_at = vault_list(client())
    assert cassette.all_played
    assert (len(vaults), len(errors)) == (39, 0)
    assert sum(not v.is_closed for v in vaults) == 28
    assert observed_at == datetime(2025, 12, 30, 3, 0, 41, tzinfo=UTC)  # Last-Modified, not fetch time

    by_address = {v.address: v for v in vaults}
    hlp = by_address[HLP]
    assert hlp.relationship.type == "parent"  # read from summary.relationship, where the list keeps it
    assert {HLP_A, HLP_B, HLP_LIQUIDATOR_2} <= set(hlp.relationship.child_addresses)
    for child in hlp.relationship.child_addresses:
        assert by_address[child].relationship.type == "child" and by_address[child].leader == HLP
    assert hlp.tvl == Decimal("343339094.6083750129") and isinstance(hlp.tvl, Decimal)
    assert hlp.apr == Decimal("0.0017004381514654516")  # a JSON number, kept to the last digit
    assert hlp.created_at == datetime(2023, 5, 4, 23, 39, 56, 849000, tzinfo=UTC)

    snipe = by_address["0x00043d4a2c258892172dc6ce5f62e2e3936ae0dc"]
    assert (snipe.name, snipe.tvl, snipe.is_closed) == ("Snipe Trading", Decimal("0.000016"), True)
    assert snipe.pnl["allTime"] == Decimal("260.08")
    names = {v.name for v in vaults}
    assert {"", "   ", "  padded name  ", 'The "Best" Vault', "量化对冲一号", "👨\u200d👩\u200d👧 Family Office"} <= names
    assert max(v.tvl for v in vaults) == Decimal("98765432109876543210.123456789012345678")


def test_the_five_largest_open_vaults_are_the_five_vault_details_answers():
    with use_cassette("vault_list"):
        vaults, errors, observed_at = vault_list(client())
    open_vaults = sorted((v for v in vaults if not v.is_closed), key=lambda v: v.tvl, reverse=True)
    assert [v.address for v in open_vaults[:5]] == [HLP, HLP_B, HLP_A, GROWI, GHOST]


def test_observed_at_without_last_modified_is_the_fetch_time_in_whole_seconds():
    transport, _ = answering(httpx.Response(200, json=[summary_entry("0x" + "ab" * 20)]))
    before = datetime.now(UTC).replace(microsecond=0)
    vaults, errors, observed_at = vault_list(client(transport))
    assert before <= observed_at <= datetime.now(UTC)
    assert observed_at.microsecond == 0 and observed_at.utcoffset() == timedelta(0)


def test_one_invalid_list_record_is_reported_and_the_others_parse():
    broken = summary_entry("0x" + "ee" * 20)
    del broken["summary"]["tvl"]
    body = [summary_entry("0x" + "01" * 20), broken, summary_entry("0x" + "02" * 20)]
    transport, _ = answering(httpx.Response(200, json=body))
    vaults, errors, observed_at = vault_list(client(transport))
    assert [v.address for v in vaults] == ["0x" + "01" * 20, "0x" + "02" * 20]
    [error] = errors
    assert (error.address, error.field) == ("0x" + "ee" * 20, "summary.tvl")


@pytest.mark.parametrize("body", [b'{"vaults": []}', b"null", b"<html>502 Bad Gateway</html>"])
def test_a_list_body_that_is_not_a_json_array_is_malformed(body):
    transport, _ = answering(httpx.Response(200, content=body))
    with pytest.raises(MalformedResponseError, match="vault list"):
        call(client(transport), "vault_list")


def test_the_list_is_not_weighted_by_the_limiter():
    transport, _ = answering(httpx.Response(200, json=[]))
    limiter = RecordingLimiter()
    call(client(transport, limiter=limiter), "vault_list")
    assert limiter.acquired == []


# --- vaultDetails from the cassette ---------------------------------------------------------------------------


def test_details_of_a_normal_user_vault():
    limiter = RecordingLimiter()
    with use_cassette("vault_details"):
        growi = call(client(limiter=limiter), "vault_details", GROWI)
    assert limiter.acquired == [20]
    assert (growi.name, growi.relationship.type, growi.is_closed, growi.allow_deposits) == (
        "Growi HF", "normal", False, True)
    assert growi.leader_commission == Decimal("0.1") and growi.apr == Decimal("-0.0009216588209854165")
    assert growi.followers_listed == 101  # the capped list with its "Leader" row, not the depositor count
    assert list(growi.portfolio) == list(PERIODS)
    last_time, last_value = growi.portfolio["allTime"].account_value[-1]
    assert last_value == Decimal("5548124.7052570004") and last_time.tzinfo == UTC


def test_details_of_the_hlp_parent():
    with use_cassette("vault_details"):
        hlp = call(client(), "vault_details", HLP)
    assert hlp.name == "Hyperliquidity Provider (HLP)"
    assert hlp.relationship.type == "parent"
    assert hlp.relationship.child_addresses == tuple(sorted([HLP_A, HLP_B, HLP_LIQUIDATOR_2,
                                                             "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"]))
    assert hlp.max_distributable == Decimal("94856870.164485") and hlp.leader_commission == Decimal(0)
    assert [len(hlp.portfolio[p].account_value) for p in ("day", "week", "month")] == [13, 64, 45]


def test_details_of_an_hlp_child_with_its_real_portfolio():
    with use_cassette("vault_details"):
        child = call(client(), "vault_details", HLP_B)
    assert (child.relationship.type, child.leader) == ("child", HLP)
    assert [len(w.account_value) for w in child.portfolio.values()] == [13, 64, 45, 76, 13, 64, 45, 72]
    all_time = child.portfolio["allTime"]
    assert all_time.account_value[0] == (datetime(2023, 5, 10, 22, 45, 0, 34000, tzinfo=UTC), Decimal("0.0"))
    assert all_time.volume == Decimal("170043719297.2099914551")
    assert child.portfolio["perpAllTime"].account_value[0][0] > all_time.account_value[0][0]


def test_a_null_answer_means_no_such_vault_and_is_not_retried():
    sleeps = Sleeps()
    with use_cassette("vault_details") as cassette:
        assert call(client(sleep=sleeps), "vault_details", GHOST) is None
    assert cassette.play_count == 1 and sleeps.waits == []


def test_422_is_not_retried_and_says_what_was_rejected():
    sleeps = Sleeps()
    with use_cassette("vault_details") as cassette, pytest.raises(RequestRejectedError) as caught:
        call(client(sleep=sleeps), "vault_details", "0xnot-an-address")
    assert cassette.play_count == 1 and sleeps.waits == []
    error = caught.value
    assert error.status_code == 422
    assert error.request_description == f"POST {API}/info vaultDetails 0xnot-an-address"
    assert error.request_description in str(error)
    assert "Failed to deserialize the JSON body into the target type" in str(error)


def test_429_then_200_pauses_the_run_for_retry_after_and_slows_it_down(caplog):
    limiter, sleeps = RecordingLimiter(), Sleeps()
    with use_cassette("vault_details") as cassette, caplog.at_level(logging.WARNING, "vault_ingest.hyperliquid"):
        child = call(client(limiter=limiter, sleep=sleeps, random=lambda: 0.999), "vault_details", HLP_A)
    assert child.name == "HLP Strategy A"
    assert cassette.play_count == 2
    assert limiter.acquired == [20, 20]  # every attempt spends weight
    assert limiter.waits == [2.0] and sleeps.waits == []  # the limiter's pause, Retry-After: 2, not a backoff
    assert limiter.throttle.speed == pytest.approx(0.8)
    [record] = caplog.records
    assert "HTTP 429" in record.getMessage() and HLP_A in record.getMessage() and "pausing every request" in (
        record.getMessage())


def test_the_client_sends_the_bodies_the_cassette_recorded_byte_for_byte():
    transport, seen = answering(httpx.Response(200, content=b"null"))
    cassette = yaml.safe_load((CASSETTES / "vault_details.yaml").read_text(encoding="utf-8"))
    recorded = [interaction["request"]["body"] for interaction in cassette["interactions"]]
    for body in recorded:
        call(client(transport), "vault_details", json.loads(body)["vaultAddress"])
    assert [r.content.decode() for r in seen] == recorded


# --- faults beyond the cassettes ------------------------------------------------------------------------------


def test_5xx_on_every_attempt_exhausts_the_retries():
    transport, seen = answering(httpx.Response(503, text="upstream unavailable"))
    limiter, sleeps = RecordingLimiter(), Sleeps()
    with pytest.raises(RetriesExhaustedError) as caught:
        call(client(transport, limiter=limiter, sleep=sleeps, max_attempts=4, random=lambda: 1.0),
             "vault_details", HLP)
    assert len(seen) == 4 and limiter.acquired == [20] * 4
    assert sleeps.waits == [0.5, 1.0, 2.0]  # base * 2^n, full jitter at its top
    error = caught.value
    assert (error.status_code, error.request_description) == (503, f"POST {API}/info vaultDetails {HLP}")
    assert "4 attempts" in str(error) and "HTTP 503" in str(error)


def test_backoff_is_capped_and_jittered():
    transport, _ = answering(httpx.Response(500))
    sleeps = Sleeps()
    with pytest.raises(RetriesExhaustedError):
        call(client(transport, sleep=sleeps, max_attempts=7, backoff_cap=3.0, random=lambda: 0.5), "vault_list")
    assert sleeps.waits == [0.25, 0.5, 1.0, 1.5, 1.5, 1.5]


def test_retry_after_as_an_http_date_is_a_minimum_wait():
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    transport, seen = answering(httpx.Response(503, headers={"Retry-After": later}), httpx.Response(200, json=[]))
    sleeps = Sleeps()
    call(client(transport, sleep=sleeps, random=lambda: 0.0), "vault_list")
    assert len(seen) == 2
    [wait] = sleeps.waits
    assert 37 <= wait <= 40


def test_a_lost_connection_is_retried():
    transport, seen = answering(httpx.ConnectError("connection refused"), httpx.Response(200, content=b"null"))
    assert call(client(transport), "vault_details", HLP) is None
    assert len(seen) == 2


def test_timeouts_on_every_attempt_raise_transport_error_naming_the_request():
    transport, seen = answering(httpx.ReadTimeout("timed out"))
    with pytest.raises(TransportError, match=f"POST {API}/info vaultDetails {HLP} got no HTTP answer") as caught:
        call(client(transport, max_attempts=3), "vault_details", HLP)
    assert len(seen) == 3 and isinstance(caught.value.__cause__, httpx.ReadTimeout)


def test_other_4xx_fail_at_once():
    transport, seen = answering(httpx.Response(403, text="blocked"))
    with pytest.raises(HTTPStatusError, match="HTTP 403") as caught:
        call(client(transport), "vault_details", HLP)
    assert type(caught.value) is HTTPStatusError and caught.value.status_code == 403
    assert len(seen) == 1


def test_a_details_body_that_is_not_json_is_malformed():
    transport, _ = answering(httpx.Response(200, text="<html>upstream error</html>"))
    with pytest.raises(MalformedResponseError, match=f"vaultDetails {HLP}: response is not JSON"):
        call(client(transport), "vault_details", HLP)


# --- a 429 pauses the whole run -------------------------------------------------------------------------------


def test_a_429_pauses_every_request_of_the_run_not_only_its_own():
    limiter = RecordingLimiter()
    sent: list[tuple[float, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        address = json.loads(request.content)["vaultAddress"]
        sent.append((limiter.now, address))
        if len(sent) == 1:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return httpx.Response(200, content=b"null")

    async def go():
        async with client(httpx.MockTransport(handler), limiter=limiter) as hl:
            await asyncio.gather(*(hl.vault_details(a) for a in (HLP, HLP_A, HLP_B)))

    asyncio.run(go())
    first, *rest = sent
    assert first == (0.0, HLP)
    assert len(rest) == 3 and all(when >= 7.0 for when, _ in rest)  # the others waited out the 429's pause too


def test_retry_after_past_the_cap_is_capped_and_429s_in_flight_slow_down_once():
    limiter = RecordingLimiter()
    assert limiter.throttled(3600.0) == 60.0
    limiter.throttled(None)  # sent before the pause began: neither a longer pause nor another slow-down
    assert (limiter.throttle.paused_until, limiter.throttle.speed) == (60.0, pytest.approx(0.8))
    limiter.now = 61.0
    assert limiter.throttled(None) == 10.0  # a second 429 in a row without Retry-After: the pause doubles
    assert limiter.throttle.speed == pytest.approx(0.64)
    limiter.now = 80.0
    limiter.answered()
    assert limiter.throttled(None) == 5.0


# --- the circuit breaker --------------------------------------------------------------------------------------


def test_the_breaker_stops_the_run_after_n_failures_in_a_row_and_sends_nothing_after():
    transport, seen = answering(httpx.Response(503, text="upstream unavailable"))
    hl = client(transport, breaker_threshold=4, max_attempts=6)

    async def go():
        async with hl:
            with pytest.raises(CircuitOpenError) as first:
                await hl.vault_details(HLP)
            with pytest.raises(CircuitOpenError) as second:
                await hl.vault_details(HLP_A)
            return first.value, second.value

    first, second = asyncio.run(go())
    assert len(seen) == 4  # not the 6 attempts, and nothing for the second vault
    assert second is first
    assert first.failures == 4 and "HTTP 503" in first.last_failure and HLP in first.last_failure
    assert "4 failed answers in a row" in str(first) and "try again later" in str(first)


def test_403s_on_different_vaults_open_the_breaker_with_the_region_hint():
    transport, seen = answering(httpx.Response(403, text="blocked"))
    hl = client(transport, breaker_threshold=3)

    async def go():
        errors = []
        async with hl:
            for address in (HLP, HLP_A, HLP_B, GROWI):
                try:
                    await hl.vault_details(address)
                except HTTPStatusError as exc:
                    errors.append(type(exc))
                except CircuitOpenError as exc:
                    errors.append(exc)
        return errors

    errors = asyncio.run(go())
    assert errors[:2] == [HTTPStatusError, HTTPStatusError]
    assert isinstance(errors[2], CircuitOpenError) and errors[3] is errors[2]
    assert "allowed region" in str(errors[2])
    assert len(seen) == 3


def test_an_answer_in_between_closes_the_count_and_lost_connections_count_too():
    failures = [httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(200, content=b"null")] * 4
    transport, seen = answering(*failures)
    hl = client(transport, breaker_threshold=3)

    async def go():
        async with hl:
            return [await hl.vault_details(HLP) for _ in range(4)]  # two failures, then an answer, each time

    assert asyncio.run(go()) == [None] * 4
    assert len(seen) == 12
    lost = client(answering(httpx.ConnectError("refused"))[0], breaker_threshold=3)
    with pytest.raises(CircuitOpenError, match="ConnectError"):
        call(lost, "vault_details", HLP)
