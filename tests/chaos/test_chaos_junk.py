"""The junk generators: reproducible, on every method, and naming the decoy instead of Glance."""

from __future__ import annotations

import random

from chaos.scenarios.s5_junk import METHODS, Junk, hostile_junk, hypothesis_examples, junk_text, random_junk
from generated.glance.gateway.v1 import image_service_pb2 as pb


def test_random_junk_is_reproducible_and_covers_every_method() -> None:
    one, other = random.Random(5), random.Random(5)
    assert [random_junk(one) for _ in range(20)] == [random_junk(other) for _ in range(20)]
    rng = random.Random(5)
    drawn = [random_junk(rng) for _ in range(300)]
    assert {j.method for j in drawn} == set(METHODS)
    assert all(len(j.messages) == 1 for j in drawn if j.method != "AddImage")


def test_hostile_messages_are_drawn_on_every_method_and_name_the_decoy() -> None:
    drawn: list[Junk] = []
    count = hypothesis_examples(hostile_junk(4242, "http://127.0.0.1:9292"), 300, drawn.append)
    assert count == len(drawn) == 300
    assert {j.method for j in drawn} == set(METHODS)
    assert all(j.source == "hypothesis" for j in drawn)
    assert any(b"127.0.0.1:4242" in m for j in drawn for m in j.messages), "the decoy is never named"


def test_a_junk_call_is_described_by_its_fields_with_long_values_cut() -> None:
    request = pb.UpdateImageRequest(image_id="x", image=pb.Image(name="A" * 1000, properties={"k": "v"}))
    request.update_mask.paths.append("name")
    text = junk_text(Junk("UpdateImage", "hypothesis", (request.SerializeToString(),)))
    assert text.startswith("UpdateImage (hypothesis) {image_id='x', image={name='AAAA")
    assert "...(1000)" in text and "1 entries" in text and "paths=[1: 'name']" in text
    assert junk_text(Junk("GetImageMeta", "random", (b"\xff\xff",))) == "GetImageMeta (random) b'\\xff\\xff'"
