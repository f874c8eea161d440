"""Sharded arrays: written a shard at a time, read a row or a range at a time, and refused with
the file named when a shard is missing, cut short or not what the index says."""

import keras
import numpy as np
import pandas as pd
import pytest

from covidxray.data.images import decoded
from covidxray.data.provenance import manifest_digest
from covidxray.data.shards import INDEX, Shards, ShardWriter, prepared_images, write_shards
from covidxray.errors import PipelineError
from covidxray.files import read_json, replacing_folder
from covidxray.model.inputs import BankBatches, RowBatches, batches_of
from covidxray.paths import FEATURES, MANIFEST, METRICS, MODELS, PREPARED_IMAGES
from tests.conftest import TINY, make_recipe, make_task, write_params


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a manifest, which shards written for the pipeline are stamped with."""
    monkeypatch.chdir(tmp_path)
    MANIFEST.parent.mkdir(parents=True)
    MANIFEST.write_text("path\na\nb\nc\nd\ne\nf\ng\n")
    return tmp_path


def written(folder, array, shard_size, batch=3, made_from=None):
    """array written in batches of `batch` rows; read back as Shards."""
    batches = (array[i:i + batch] for i in range(0, len(array), batch))
    write_shards(folder, batches, array.shape[1:], array.dtype, shard_size, made_from)
    return Shards(folder, "features")


def test_rows_read_back_the_same_whatever_the_order_and_the_partial_last_shard(tmp_path):
    array = np.random.default_rng(0).normal(size=(7, 2, 3)).astype(np.float32)
    shards = written(tmp_path / "a", array, shard_size=3)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "00000.npy", "00001.npy", "00002.npy", INDEX]
    assert np.load(tmp_path / "a" / "00002.npy").shape == (1, 2, 3)  # the partial last shard
    assert shards.shape == (7, 2, 3) and len(shards) == 7 and shards.dtype == np.float32
    np.testing.assert_array_equal(shards[:], array)
    np.testing.assert_array_equal(shards[2:6], array[2:6])  # a range across two shards
    for rows in ([6, 0, 3, 3, 2], [5, 4], np.array([1, 2, 3, 4]), [-1], []):
        np.testing.assert_array_equal(shards[rows], array[rows])
    mask = np.arange(7) % 3 == 0
    np.testing.assert_array_equal(shards[mask], array[mask])
    np.testing.assert_array_equal(shards[4], array[4])
    with pytest.raises(IndexError):
        shards[[7]]


def test_a_shard_is_a_plain_npy_file_and_the_same_rows_give_the_same_bytes(tmp_path):
    array = np.arange(10, dtype=np.uint8).reshape(5, 2)
    written(tmp_path / "a", array, shard_size=2)
    written(tmp_path / "b", array, shard_size=2, batch=5)  # other batches, same shards
    for name in ("00000.npy", "00001.npy", "00002.npy", INDEX):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "00001.npy", mmap_mode="r"),
                                  array[2:4])


def test_float16_storage_casts_rows_and_reads_back_to_within_its_precision(tmp_path):
    array = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    writer = ShardWriter(tmp_path / "h", (4,), "float16", 2)
    writer.write(array)
    writer.close()
    shards = Shards(tmp_path / "h", "features")
    assert shards.dtype == np.float16
    np.testing.assert_allclose(shards[:], array, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"rows of shape \(3,\), not \(4,\)"):
        writer.write(np.zeros((1, 3)))


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.unlink(), r"00001\.npy: not a readable shard"),
    (lambda path: path.write_bytes(path.read_bytes()[:-5]), r"00001\.npy: .* bytes where its"
                                                            r" header says .*cut short"),
    (lambda path: path.write_bytes(b"not an npy file at all"), r"00001\.npy: not a readable shard"),
    (lambda path: np.save(path, np.zeros((2, 3), np.float64)),
     r"00001\.npy: holds float64 of shape \(2, 3\), where .*shards\.json says float32 of shape"
     r" \(1, 3\)"),
    (lambda path: (path.parent / INDEX).write_text("{not json"), r"shards\.json: not valid JSON"),
    (lambda path: (path.parent / INDEX).write_text("{}"), r"shards\.json: not an index of shards"),
])
def test_a_damaged_shard_is_named_with_the_way_to_restore_it_before_any_row_is_read(
        tmp_path, damage, message):
    """Checked when the folder is opened: train used to open DVCLive (emptying its metrics) and
    only then find the damage. Plain `dvc checkout` refuses a changed output: --force is named."""
    written(tmp_path / "a", np.ones((5, 3), np.float32), shard_size=4)
    damage(tmp_path / "a" / "00001.npy")
    with pytest.raises(PipelineError, match=message + r".*`dvc repro.*`dvc checkout --force"):
        Shards(tmp_path / "a", "features")


def test_shards_of_another_manifest_or_none_at_all_are_refused(project):
    with pytest.raises(PipelineError, match=r"data/prepared/images/shards\.json: missing; run"
                                            r" `dvc repro prepare`"):
        prepared_images()
    images = np.arange(7, dtype=np.uint8).reshape(7, 1, 1, 1)
    with replacing_folder(PREPARED_IMAGES) as folder:
        written(folder, images, 4, made_from=manifest_digest())
    rows = pd.DataFrame({"image": [6, 1]})
    assert prepared_images(rows).ravel().tolist() == [6, 1]
    with pytest.raises(PipelineError, match=r"fewer images than data/merged/manifest.csv"):
        prepared_images(pd.DataFrame({"image": [7]}))
    MANIFEST.write_text("path\nother\n")
    with pytest.raises(PipelineError, match=r"made from another .*manifest.csv.*dvc repro"
                                            r" prepare"):
        prepared_images()


def test_a_stopped_writer_leaves_the_old_folder(tmp_path):
    target = tmp_path / "out"
    written(target, np.zeros((2, 1), np.float32), 4)
    with pytest.raises(KeyboardInterrupt):
        with replacing_folder(target) as folder:
            (folder / "half").write_text("x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["00000.npy", INDEX]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder left


def test_the_banks_batches_read_the_same_from_shards_as_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    views = rng.normal(size=(3, 9, 2)).astype(np.float32)
    sharded = [written(tmp_path / f"v{v}", views[v], shard_size=4) for v in range(3)]
    rows, labels = np.array([8, 1, 4, 0, 6]), np.arange(5)
    in_memory, lazy = (BankBatches(v, rows, labels, 2, seed=3) for v in (views, sharded))
    for _ in range(3):
        for k in range(len(in_memory)):
            for a, b in zip(in_memory[k], lazy[k]):
                np.testing.assert_array_equal(a, b)
        in_memory.on_epoch_begin(), lazy.on_epoch_begin()
    x, y = RowBatches(sharded[1], rows, 2, labels)[2]
    np.testing.assert_array_equal(x, views[1][[6]])
    np.testing.assert_array_equal(y, [4])
    assert len(RowBatches(sharded[1], rows, 2)) == 3


def test_prepare_and_features_write_shards_that_train_reads_in_float16_too(sources):
    """24 images in shards of 5: the last holds 4. float16 features stay within their precision
    of float32 ones, and a head trains on them."""
    from stages import external, features, merge, prepare, split, train

    tiny = TINY
    write_params(**tiny, features={"views": 1, "dtype": "float32"})
    for stage in (merge, prepare, split, external, features):
        stage.main()
    images = Shards(PREPARED_IMAGES, "prepare")
    assert len(images) == 24 and len(list(PREPARED_IMAGES.glob("*.npy"))) == 5
    assert np.load(PREPARED_IMAGES / "00004.npy").shape == (4, 32, 32, 3)
    single = np.stack([decoded(p, 32) for p in pd.read_csv(MANIFEST)["path"]])
    np.testing.assert_array_equal(images[:], single)  # decoded in parallel, then sharded
    full = {name: Shards(FEATURES / name, "features")[:] for name in ("plain", "view-00")}
    write_params(**tiny, features={"views": 1, "dtype": "float16"})
    features.main()
    for name, array in full.items():
        half = Shards(FEATURES / name, "features")
        assert half.dtype == np.float16 and len(list((FEATURES / name).glob("*.npy"))) == 5
        np.testing.assert_allclose(half[:], array, rtol=1e-3, atol=1e-3 * np.abs(array).max())
    train.main("binary")
    assert read_json(MODELS / "binary.json")["train_images"] > 0
    write_params(**tiny, features={"views": 1, "dtype": "float64"})
    with pytest.raises(PipelineError, match=r"params.yaml: features.dtype must be one of float32,"
                                            r" float16, got 'float64'"):
        features.main()


def test_a_head_trains_the_same_with_validation_in_memory_or_read_a_batch_at_a_time(tmp_path):
    """Up to a shard's worth of validation rows are read into memory, more a batch at a time
    (RowBatches): the same batches, so the same weights and the same history."""
    from covidxray.model import head, training

    rng = np.random.default_rng(0)
    plain = written(tmp_path / "plain", rng.normal(size=(30, 1, 1, 4)).astype(np.float32), 8)
    rows = pd.DataFrame({"image": range(30), "label": (plain[:][:, 0, 0, 0] > 0).astype(int),
                         "source": "kermany"})
    runs = []
    for in_memory in (1024, 0):
        task = make_task(lr=0.01, epochs=2, batch_size=4, normalize=True,
                         class_weight="balanced", restore_best=True)
        recipe = make_recipe(task, seed=0, plain_view=True, shard_size=in_memory)
        training.seed_everything(0)
        model = head.build_head(2, (1, 1, 4), normalize=True, units=0, dropout=0.0)
        history = keras.callbacks.History()
        training.fit_on_bank(model, {"bank": [], "plain": plain}, rows[:20], rows[20:], recipe,
                             callbacks=[history], verbose=0)
        runs.append((model.get_weights(), history.history["val_loss"]))
    assert isinstance(batches_of(plain, np.arange(3), 2, 0), RowBatches)
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("value", [0, 1.5, "1024"])
def test_a_bad_shard_size_is_one_clear_error(sources, value):
    from stages import merge, prepare

    write_params(image_size=32)
    merge.main()
    write_params(image_size=32, shard_size=value)
    with pytest.raises(PipelineError, match=r"^params.yaml: shard_size must be a whole number"
                                            rf" >= 1, got {value!r}$"):
        prepare.main()
    assert not PREPARED_IMAGES.exists()


def test_train_finds_a_damaged_bank_before_it_touches_its_training_log(sources):
    """DVCLive empties metrics/train/<task>/ when it opens: the bank is read first."""
    from stages import external, features, merge, prepare, split, train

    write_params(**TINY, features={"views": 1, "dtype": "float32"})
    for stage in (merge, prepare, split, external, features):
        stage.main()
    train.main("binary")
    log = METRICS / "train" / "binary"
    before = {path: path.read_bytes() for path in log.rglob("*") if path.is_file()}
    assert log / "metrics.json" in before
    (FEATURES / "plain" / "00001.npy").unlink()
    with pytest.raises(PipelineError, match=r"plain/00001\.npy: not a readable shard"):
        train.main("binary")
    assert {path: path.read_bytes() for path in log.rglob("*") if path.is_file()} == before
