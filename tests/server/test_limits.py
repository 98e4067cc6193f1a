"""What one request may cost (server/http/limits.py): items, JSON values and body bytes, checked before the
body is parsed; and the memory release after a large request (server/http/allocator.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from modelpod.server.http.allocator import ReleaseAfterLargeRequests
from modelpod.server.http.limits import RequestLimits, count_json_values, json_values_limit
from modelpod.signature import Signature, TensorSpec
from modelpod.specfile import load_spec
from modelpod.specfile.model import default_body_limit
from modelpod.specfile.resolved import Spec
from tests.server.conftest import with_server
from tests.server.test_app import serving

pytestmark = pytest.mark.anyio

ITEM = [[[0.5]] * 8] * 8  # one digits image


@pytest.fixture
def digits_spec(digits_dir) -> Spec:
    return load_spec(digits_dir)


@pytest.mark.parametrize(
    ("memory", "limit"),
    [("512Mi", 8 * 2**20), ("1Gi", 16 * 2**20), ("2Gi", 16 * 2**20), ("128Mi", 2 * 2**20), ("32Mi", 2**20)],
)
def test_the_default_body_limit_follows_the_containers_memory(memory, limit):
    assert default_body_limit(memory) == limit


def test_limits_default_from_the_spec(digits_spec):
    limits = RequestLimits.for_spec(digits_spec)  # digits: max_batch_size 64, memory 512Mi
    assert (limits.max_body_bytes, limits.max_items) == (8 * 2**20, 256)
    explicit = RequestLimits.for_spec(with_server(digits_spec, max_body_bytes=1000, max_request_items=3))
    assert (explicit.max_body_bytes, explicit.max_items) == (1000, 3)


def test_the_json_value_bound_covers_every_layout_of_the_largest_request():
    image = TensorSpec(name="image", dtype="float32", shape=(8, 8, 1))
    signature = Signature(inputs=(image,), outputs=(TensorSpec(name="p", dtype="float32", shape=(10,)),))
    limit = json_values_limit(signature, 256)
    assert limit is not None
    nested = orjson.dumps({"instances": [{"image": ITEM}] * 256})
    v2 = orjson.dumps(
        {"inputs": [{"name": "image", "shape": [256, 8, 8, 1], "datatype": "FP32", "data": [ITEM] * 256}]}
    )
    assert count_json_values(nested, limit) <= limit
    assert count_json_values(v2, limit) <= limit
    any_length = TensorSpec(name="ids", dtype="int64", shape=(-1,))
    assert json_values_limit(Signature(inputs=(any_length,), outputs=signature.outputs), 256) is None


def test_commas_inside_strings_are_not_counted_as_values():
    texts = orjson.dumps({"input": ["a, b: [c] {d}, " * 100] * 10})
    assert count_json_values(texts, 1000) < 30
    assert count_json_values(b"[" + b"[]," * 5000 + b"[]]", 1000) > 1000


async def test_more_items_than_one_request_may_carry_is_413(digits_spec):
    spec = with_server(digits_spec, max_request_items=4)
    v2_entry = {"name": "image", "shape": [5, 8, 8, 1], "datatype": "FP32", "data": [0.5] * 320}
    async with serving(spec) as client:
        instances = await client.post("/predict", json={"instances": [{"image": ITEM}] * 5})
        v2 = await client.post("/v2/models/digits/infer", json={"inputs": [v2_entry]})
        four = await client.post("/predict", json={"instances": [{"image": ITEM}] * 4})
        metrics = (await client.get("/metrics")).text
    for response in (instances, v2):
        assert response.status_code == 413
        assert "at most 4 in one request (server.max_request_items)" in response.json()["error"]
    assert four.status_code == 200
    assert 'modelpod_rejected_requests_total{model="digits",reason="too_many_items"} 2.0' in metrics


async def test_a_body_of_more_values_than_the_items_can_use_is_refused_before_it_is_parsed(digits_spec):
    # the request in small: declared 131070 items of zeros; and values hidden in an unknown key
    zeros = b'{"inputs":[{"name":"image","shape":[4000,8,8,1],"datatype":"FP32","data":[' + b"0," * 255999
    hidden = orjson.dumps({"inputs": {"image": ITEM}, "junk": [[]] * 100_000})
    async with serving(digits_spec) as client:
        declared = await client.post("/v2/models/digits/infer", content=zeros + b"0]}]}")
        junk = await client.post("/predict", content=hidden)
    for response in (declared, junk):
        assert response.status_code == 413
        assert "more JSON values than 256 items of this model's inputs" in response.json()["error"]


async def test_a_large_body_is_followed_by_one_memory_release():
    released: list[int] = []
    release = ReleaseAfterLargeRequests(lambda: released.append(1), delay=0.01)
    release.opened()
    release.opened()
    release.closed()
    await asyncio.sleep(0.05)
    assert released == []  # one still in flight
    release.closed()
    for _ in range(100):
        if released:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert released == [1]
    assert release.trims == 1
