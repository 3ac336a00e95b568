"""The shared fixtures produce artifacts the rest of the suite can rely on."""

from pathlib import Path

from slipstream.manifest import load_manifest, verify_variant_file


def test_tiny_artifact_has_fp32_and_int8_variants_that_verify(tiny_artifact: Path) -> None:
    manifest = load_manifest(tiny_artifact)
    assert sorted(manifest.variants) == ["fp32", "int8"]
    for variant in manifest.variants.values():
        assert verify_variant_file(tiny_artifact, variant).is_file()
    assert (tiny_artifact / manifest.tokenizer.file).is_file()
