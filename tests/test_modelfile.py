"""Model files read in Python: the header as VW writes it, the digest stamp, archives."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import vowpalwabbit

from banditloop import modelfile, vwcheck
from banditloop.errors import BadRequest
from banditloop.policy import Policy, with_epsilon
from helpers import EXAMPLE, vw_model, zip_of

ARGS = "--cb_explore_adf --synthcover -q :: --epsilon 0"
CCB_EXAMPLE = (
    '{"FromUrl":[{"a":1}],"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}],'
    '"_slots":[{"_id":"s","_label_cost":-1,"_a":[0,1],"_p":[0.5,0.5]}]}'
)


def test_the_header_is_read_and_written_as_vw_does(tmp_path: Path) -> None:
    blob = vw_model(tmp_path, ARGS)
    h = modelfile.read_header(blob)
    assert (h.version, h.id, h.bits) == (vowpalwabbit.__version__, "", 18)
    assert h.options.split() == [
        "--cb_adf",
        "--cb_explore_adf",
        "--cb_type",
        "mtr",
        "--csoaa_ldf",
        "multiline",
        "--csoaa_rank",
        "--epsilon",
        "0",
        "--quadratic",
        "::",
        "--synthcover",
    ]
    assert modelfile.header_bytes(h) + blob[h.end :] == blob


def test_a_stamped_model_loads_and_vw_writes_it_back_unchanged(tmp_path: Path) -> None:
    stamped = modelfile.stamp(vw_model(tmp_path, ARGS))
    assert modelfile.verify(stamped).id.startswith(modelfile.STAMP)
    (tmp_path / "s.vw").write_bytes(stamped)
    ws = vowpalwabbit.Workspace(
        f"{ARGS} --json --quiet -i {tmp_path / 's.vw'} --preserve_performance_counters"
    )
    ws.save(str(tmp_path / "again.vw"))
    ws.finish()
    assert (tmp_path / "again.vw").read_bytes() == stamped


def test_policies_save_stamped_models() -> None:
    policy = Policy(ARGS)
    policy.learn([EXAMPLE])
    blob = policy.save()
    policy.close()
    assert modelfile.verify(blob).id.startswith(modelfile.STAMP)


def test_every_cut_of_a_stamped_model_is_refused(tmp_path: Path) -> None:
    stamped = modelfile.stamp(vw_model(tmp_path, ARGS))
    for n in range(len(stamped)):
        with pytest.raises(BadRequest) as info:
            modelfile.verify(stamped[:n])
        assert info.value.code == "InvalidModelImportFormat"


def test_a_changed_header_fails_its_checksum(tmp_path: Path) -> None:
    blob = bytearray(vw_model(tmp_path, ARGS))
    at = blob.index(b"--synthcover")
    blob[at + 2 : at + 7] = b"squar"  # still an allowed option, but not what was written
    with pytest.raises(BadRequest, match="checksum"):
        modelfile.verify(bytes(blob))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"options": " --cb_explore_adf --readable_model /tmp/x"}, "--readable_model"),
        ({"options": " --cb_explore_adf --daemon --port 1"}, "--daemon"),
        ({"id": "x --readable_model /tmp/x"}, "id"),
        ({"ngrams": (b"-pX",)}, "--ngram"),
        ({"lda": 3}, "--lda"),
        ({"bits": 31}, "bits"),
    ],
)
def test_what_vw_would_add_to_its_options_is_checked(
    tmp_path: Path, change: dict[str, object], words: str
) -> None:
    blob = vw_model(tmp_path, ARGS)
    h = modelfile.read_header(blob)
    crafted = modelfile.header_bytes(dataclasses.replace(h, **change)) + blob[h.end :]
    with pytest.raises(BadRequest) as info:
        modelfile.verify(crafted)
    assert words in info.value.message


def test_archives(tmp_path: Path) -> None:
    blob = vw_model(tmp_path, ARGS)
    assert modelfile.unpack(modelfile.signed_archive(blob)) == blob
    digest = hashlib.sha512(blob).digest()
    cases = {
        "no signer": ({"model.vw": blob, "sha512_signature.bin": digest}, "Signature"),
        "no digest": ({"model.vw": blob, "signer.der": b""}, "Signature"),
        "wrong digest": (
            {"model.vw": blob, "sha512_signature.bin": b"x" * 64, "signer.der": b""},
            "Signature",
        ),
        "certificate": (
            {"model.vw": blob, "sha512_signature.bin": digest, "signer.der": b"cert"},
            "Signature",
        ),
        "extra member": (
            {"model.vw": blob, "sha512_signature.bin": digest, "signer.der": b"", "x": b""},
            "Format",
        ),
        "no model": ({"sha512_signature.bin": digest, "signer.der": b""}, "Format"),
    }
    for name, (members, code) in cases.items():
        with pytest.raises(BadRequest) as info:
            modelfile.unpack(zip_of(members))
        assert info.value.code == f"InvalidModelImport{code}", name


def test_a_zip_bomb_is_refused_from_its_directory() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("model.vw", "w") as fh:
            for _ in range(16):
                fh.write(bytes(1 << 20))
        zf.writestr("sha512_signature.bin", bytes(64))
        zf.writestr("signer.der", b"")
    with pytest.raises(BadRequest, match="times when unpacked"):
        modelfile.unpack(out.getvalue())


@pytest.mark.parametrize(
    "args",
    [
        "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::",
        "--cb_explore_adf -q :: --squarecb --epsilon 0",
        "--cb_explore_adf -q :: --regcbopt --cb_min_cost -1 --cb_max_cost 0 --epsilon 0",
        "--cb_explore_adf -q :: --bag 5 --epsilon 0.05",
        "--cb_explore_adf -q :: --synthcover --random_seed 7 --epsilon 0",
        "--ccb_explore_adf --epsilon 0.2 -q :: --cb_type mtr",
    ],
)
def test_a_model_banditloop_saved_imports_again(args: str) -> None:
    """The checks refuse no honest model: every exploration's saved state is read and
    written back byte for byte, whatever explorationPercentage the loop has now."""
    policy = Policy(args)
    policy.learn([CCB_EXAMPLE if "--ccb_explore_adf" in args else EXAMPLE] * 20)
    blob = policy.save()
    policy.close()
    vwcheck.check(with_epsilon(args, 0.3), blob)
