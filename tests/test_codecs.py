"""Codec round trips: jpg / single-array lz4 / npy, and the multi-array `LSC1` container (groups, filters)."""

from __future__ import annotations

import zlib

import lz4.block
import numpy as np
import pytest

from lead_stream.core import array_filters, codecs, container

RNG = np.random.default_rng(0)


def _labels(shape: tuple[int, ...], high: int) -> np.ndarray:
    """A label raster with runs (like semantic maps) plus some noise."""
    rows = np.repeat(RNG.integers(0, high, (shape[0] // 8 or 1,) + shape[1:], dtype=np.uint8), 8, axis=0)
    out = rows[: shape[0]].copy()
    out[RNG.random(shape) < 0.01] = high - 1
    return out


@pytest.mark.parametrize(
    "kind, array",
    [
        pytest.param("lz4", _labels((320, 384), 13), id="lz4-uint8-raster"),
        pytest.param("lz4", RNG.normal(size=(7, 9)).astype(np.float32), id="lz4-float32"),
        pytest.param("lz4", np.zeros((0, 9), np.float32), id="lz4-empty"),
        pytest.param("npy", RNG.normal(size=(5, 5)).astype(np.float16), id="npy-float16"),
        pytest.param("npy", np.arange(6, dtype=np.int64).reshape(2, 3), id="npy-int64"),
    ],
)
def test_single_array_codecs_round_trip_bit_exact(kind, array):
    decoded = codecs.decode(kind, codecs.encode(kind, array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_jpg_round_trips_within_jpeg_error():
    image = np.repeat(np.repeat(RNG.integers(0, 255, (24, 72, 3), dtype=np.uint8), 16, 0), 16, 1)
    decoded = codecs.decode("jpg", codecs.encode("jpg", image))
    assert decoded.shape == (384, 1152, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - image).mean() < 3


def test_codec_of_uses_the_last_extension():
    assert codecs.codec_of("rgb_pert.jpg") == "jpg" and codecs.codec_of("arrays.lz4") == "lz4"


ARRAYS = {
    "raster": _labels((320, 384), 6),
    "labels": _labels((384, 1152), 10),
    "depth": RNG.integers(0, 256, (96, 288), dtype=np.uint8),
    "boxes": RNG.normal(size=(7, 9)).astype(np.float32),
    "radar": RNG.normal(0, 20, (150, 5)).astype(np.float16),
    "no_boxes": np.zeros((0, 9), np.float32),
    "scalar": np.array(3.5, np.float64),
    "flags": np.array([True, False, True]),
    "counts": np.arange(4, dtype=np.int64),
}


@pytest.mark.parametrize(
    "name, filter_name",
    [
        pytest.param("raster", "none", id="none"),
        pytest.param("raster", "nibble", id="nibble-counts"),
        pytest.param("labels", "nibble", id="nibble-labels"),
        pytest.param("depth", "transpose", id="transpose-uint8"),
        pytest.param("boxes", "shuffle", id="shuffle-float32"),
        pytest.param("radar", "transpose+shuffle", id="transpose+shuffle-float16"),
        pytest.param("labels", "nibble+transpose", id="nibble+transpose"),
        pytest.param("no_boxes", "transpose", id="transpose-empty"),
        pytest.param("scalar", "shuffle", id="shuffle-0d"),
    ],
)
def test_each_filter_round_trips_bit_exact(name, filter_name):
    array = ARRAYS[name]
    payload = container.encode_arrays({"g": {name: array}}, filters={name: filter_name})
    decoded = container.decode_group(payload, "g")[name]
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    "outer, level",
    [
        pytest.param("none", 4, id="lz4-only"),
        pytest.param("lz4", 4, id="lz4-in-lz4"),
        pytest.param("deflate", 0, id="fast-lz4-in-deflate"),
        pytest.param("deflate", 12, id="lz4-hc12-in-deflate"),
        pytest.param("zstd", 12, id="lz4-hc12-in-zstd"),
    ],
)
def test_container_round_trips_every_array_of_every_group(outer, level):
    groups = {
        "normal": ARRAYS,
        "perturbated": {k: v[::-1].copy() if v.ndim else v for k, v in ARRAYS.items()},
    }
    filters = {"raster": "nibble", "labels": "nibble", "depth": "transpose", "radar": "transpose+shuffle"}
    payload = container.encode_arrays(groups, filters=filters, level=level, outer=outer)
    assert payload[:4] == container.ARRAYS_MAGIC
    decoded = codecs.decode("lz4", payload)
    assert list(decoded) == ["normal", "perturbated"]
    for group, arrays in groups.items():
        assert list(decoded[group]) == list(arrays)
        for name, array in arrays.items():
            got = decoded[group][name]
            assert got.dtype == array.dtype and got.shape == array.shape, (group, name)
            np.testing.assert_array_equal(got, array, err_msg=f"{group}/{name}")


def test_unfiltered_arrays_are_aligned_zero_copy_views_of_one_buffer():
    payload = container.encode_arrays({"g": ARRAYS}, filters={"depth": "transpose"})
    stored = container.decode_group_stored(payload, "g")

    def root(array: np.ndarray) -> object:
        while isinstance(array, np.ndarray) and array.base is not None:
            array = array.base
        return array

    assert len({id(root(s.data)) for s in stored.values()}) == 1  # one decompressed buffer
    start = min(s.data.ctypes.data for s in stored.values())
    assert all((s.data.ctypes.data - start) % array_filters.ARRAY_ALIGN == 0 for s in stored.values())
    depth = container.decode_group(payload, "g")["depth"]
    assert not depth.flags.writeable and depth.base is not None  # a .T view, not a copy
    np.testing.assert_array_equal(depth, ARRAYS["depth"])


def test_a_group_decodes_without_touching_the_other_groups_block():
    groups = {"normal": {"a": ARRAYS["boxes"]}, "perturbated": {"a": ARRAYS["radar"]}}
    payload = bytearray(container.encode_arrays(groups))
    start, end = container.array_groups(payload)["perturbated"]
    payload[start:end] = b"\xff" * (end - start)  # the other variant is garbage
    np.testing.assert_array_equal(container.decode_group(bytes(payload), "normal")["a"], ARRAYS["boxes"])
    with pytest.raises((ValueError, lz4.block.LZ4BlockError, zlib.error)):
        container.decode_group(bytes(payload), "perturbated")


def test_zstd_is_the_default_outer_codec_and_a_bad_frame_is_a_named_error():
    payload = container.encode_arrays({"g": ARRAYS}, filters={"depth": "transpose"})
    assert payload[4] == container.OUTER_CODECS["zstd"]
    start, end = container.array_groups(payload)["g"]
    short_size = bytearray(payload)
    short_size[start : start + 4] = (int.from_bytes(payload[start : start + 4], "little") - 1).to_bytes(
        4, "little"
    )
    with pytest.raises(ValueError, match="group 'g': corrupt zstd block"):
        container.decode_group(bytes(short_size), "g")  # the frame decodes to more than its stated size
    garbage = bytearray(payload)
    garbage[start + 4 : end] = b"\x00" * (end - start - 4)
    with pytest.raises(ValueError, match="group 'g': corrupt zstd block"):
        container.decode_group(bytes(garbage), "g")


def test_dictionary_makes_the_table_nearly_free():
    arrays = {"lidar_bev": np.zeros((320, 384), np.uint8), "semantic": np.zeros((384, 1152), np.uint8)}
    payload = container.encode_arrays(
        {"normal": arrays}, filters={"lidar_bev": "nibble", "semantic": "nibble"}
    )
    assert len(payload) < 120


def test_unpack_nibbles_writes_into_a_slot():
    labels = ARRAYS["labels"]
    packed = container.decode_group_stored(
        container.encode_arrays({"g": {"x": labels}}, filters={"x": "nibble"}), "g"
    )["x"].data
    batch = np.zeros((2,) + labels.shape, np.uint8)
    array_filters.unpack_nibbles(packed, out=batch[1])
    np.testing.assert_array_equal(batch[1], labels)
    assert not batch[0].any()


@pytest.mark.parametrize(
    "arrays, filters, message",
    [
        pytest.param(
            {"x": np.full((2, 2), 16, np.uint8)}, {"x": "nibble"}, "values 0..15", id="nibble-over-15"
        ),
        pytest.param(
            {"x": np.zeros((3, 2), np.uint8)}, {"x": "nibble"}, "even first axis", id="nibble-odd-rows"
        ),
        pytest.param({"x": np.zeros((2, 2), np.float32)}, {"x": "nibble"}, "uint8", id="nibble-float"),
        pytest.param({"x": np.zeros(4, np.uint8)}, {"x": "transpose"}, "2 dims", id="transpose-1d"),
        pytest.param({"x": np.zeros(4, np.uint8)}, {"x": "zip"}, "unknown filter", id="unknown-filter"),
        pytest.param({"x": np.array([None])}, {}, "object dtype", id="object-dtype"),
    ],
)
def test_encoding_rejects_what_it_cannot_store_exactly(arrays, filters, message):
    with pytest.raises(ValueError, match=message):
        container.encode_arrays({"g": arrays}, filters=filters)


def test_decoding_rejects_foreign_and_truncated_payloads():
    with pytest.raises(ValueError, match="not a lead-stream array container"):
        container.decode_group(b"LSA1" + b"\0" * 20, "g")
    payload = container.encode_arrays({"g": {"x": ARRAYS["boxes"]}})
    with pytest.raises(ValueError, match="header says"):
        container.array_groups(payload[:-3])
    with pytest.raises(KeyError):
        container.decode_group(payload, "missing")
    assert isinstance(codecs.decode("lz4", codecs.encode("lz4", ARRAYS["boxes"])), np.ndarray)  # LSA1 still


def test_variable_first_dims_keep_every_samples_table_byte_equal():
    tables = set()
    for rows in (0, 3, 11):
        arrays = {
            "boxes": RNG.normal(size=(rows, 9)).astype(np.float32),
            "depth": ARRAYS["depth"],
            "runs": np.arange(rows * 7, dtype=np.uint16),
        }
        payload = container.encode_arrays(
            {"g": arrays}, filters={"runs": "shuffle"}, variable={"boxes", "runs"}
        )
        _, _, table = container.decode_group_block(payload, "g")
        tables.add(id(table))  # one parsed table, cached by its bytes
        decoded = container.decode_group(payload, "g")
        for name, array in arrays.items():
            assert decoded[name].shape == array.shape and np.array_equal(decoded[name], array), (rows, name)
    assert len(tables) == 1


def test_unpacked_arrays_follow_the_lz4_block_and_must_come_last():
    arrays = {"depth": ARRAYS["depth"], "runs": np.arange(999, dtype=np.uint16)}
    packed = container.encode_arrays({"g": arrays}, filters={"runs": "shuffle"})
    tail = container.encode_arrays({"g": arrays}, filters={"runs": "shuffle"}, unpacked={"runs"})
    assert np.array_equal(container.decode_group(tail, "g")["runs"], arrays["runs"])
    assert np.array_equal(container.decode_group(tail, "g")["depth"], arrays["depth"])
    assert len(tail) != len(packed)
    with pytest.raises(ValueError, match="must come last"):
        container.encode_arrays({"g": {"runs": arrays["runs"], "depth": arrays["depth"]}}, unpacked={"runs"})


def test_an_attrs_only_group_carries_a_json_dict():
    payload = container.encode_arrays(
        {"normal": {"x": ARRAYS["boxes"]}, "targets": {}},
        attrs={"targets": {"speed_mps": 3.5, "brake": False}},
    )
    assert container.decode_attrs(payload, "targets") == {"speed_mps": 3.5, "brake": False}
    assert container.decode_attrs(payload, "normal") == {}
    assert codecs.decode("lz4", payload)["targets"] == {"speed_mps": 3.5, "brake": False}


def test_an_older_container_version_names_the_rebuild():
    with pytest.raises(ValueError, match="older lead-stream.*lead-stream shard"):
        container.decode_group(b"LSC1" + b"\0" * 20, "normal")
