"""Dataset readers against the reference: its own dataset classes (sssegmentation's VOCDataset, ADE20kDataset,
CityScapesDataset) read the same synthetic folders and must give the same samples and the same label maps."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnest_zoo.datasets import READERS, ade20k, cityscapes, voc
from resnest_zoo.datasets.annotations import IGNORE, read_label_map
from resnest_zoo.errors import DatasetError

from synthetic_data import synthetic_datasets, write_cityscapes  # noqa: F401  (fixture)

# the reference is an oracle the test extra installs: a missing one fails these tests, never skips them
from ssseg.modules.datasets.ade20k import ADE20kDataset
from ssseg.modules.datasets.cityscapes import CityScapesDataset
from ssseg.modules.datasets.voc import VOCDataset

REFERENCE = {
    "voc": (VOCDataset, lambda root: root / "VOCdevkit" / "VOC2012"),
    "ade20k": (ADE20kDataset, lambda root: root),
    "cityscapes": (CityScapesDataset, lambda root: root / "cityscapes"),
}


def reference_dataset(key: str, root: Path):
    cls, rootdir = REFERENCE[key]
    return cls("TEST", None, {"rootdir": str(rootdir(root)), "set": "val", "type": cls.__name__, "data_pipelines": []})


def ours(key: str, root: Path) -> list[tuple[str, np.ndarray]]:
    reader = READERS[key]
    return [(s.id, read_label_map(s.annotation, reader.mapping_for(s.annotation))) for s in reader.samples(root, "val")]


def theirs(key: str, root: Path) -> list[tuple[str, np.ndarray]]:
    reference = reference_dataset(key, root)
    results = []
    for index in range(len(reference)):
        sample = reference[index]
        target = sample["seg_target"]
        results.append((sample["id"], np.where(target == -100, IGNORE, target).astype(np.uint8)))
    return sorted(results, key=lambda pair: pair[0])


def test_id_tables_are_the_references():
    assert voc.CLSID2LABEL == VOCDataset.clsid2label
    assert ade20k.CLSID2LABEL == ADE20kDataset.clsid2label
    assert cityscapes.CLSID2LABEL == CityScapesDataset.clsid2label
    for module, cls in ((voc, VOCDataset), (ade20k, ADE20kDataset), (cityscapes, CityScapesDataset)):
        assert list(module.CLASS_NAMES) == cls.classnames


@pytest.mark.parametrize("key", ["ade20k", "cityscapes"])
def test_label_maps_equal_the_reference_datasets(key, synthetic_datasets):
    mine, reference = ours(key, synthetic_datasets[key]), theirs(key, synthetic_datasets[key])
    assert [i for i, _ in mine] == [i for i, _ in reference]
    for (image_id, labels), (_, expected) in zip(mine, reference):
        assert np.array_equal(labels, expected), image_id
    assert any((labels == IGNORE).any() for _, labels in mine)


def test_voc_palette_annotations_read_as_their_index_and_equal_the_reference_on_greyscale_copies(synthetic_datasets, tmp_path):
    """VOC distributes palette PNGs (index = class). The reference reads annotations with cv2 in greyscale, which
    gives the palette colours' luminance for such files, so it is compared on greyscale copies (same values, as its
    data preparation writes them); ours reads both kinds the same."""
    root = tmp_path / "voc"
    shutil.copytree(synthetic_datasets["voc"], root)
    annotations = root / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    palette_labels = ours("voc", root)
    for path in annotations.glob("*.png"):
        assert Image.open(path).mode == "P"
        Image.fromarray(np.asarray(Image.open(path))).save(path)  # mode L, same stored values
    greyscale_labels = ours("voc", root)
    reference = theirs("voc", root)
    assert [i for i, _ in palette_labels] == [i for i, _ in reference]
    for (image_id, p), (_, g), (_, r) in zip(palette_labels, greyscale_labels, reference):
        assert np.array_equal(p, g) and np.array_equal(p, r), image_id


def test_cityscapes_train_id_files_give_the_same_labels_as_label_id_files(tmp_path):
    label_ids = ours("cityscapes", write_cityscapes(tmp_path / "ids", count=3))
    train_ids = ours("cityscapes", write_cityscapes(tmp_path / "train", count=3, train_ids=(0, 1, 2)))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(label_ids, train_ids))
    names = [s.annotation.name for s in READERS["cityscapes"].samples(tmp_path / "train")]
    assert all(name.endswith("_gtFine_labelTrainIds.png") for name in names)


def test_every_stored_value_maps_as_the_references_loop():
    for module in (voc, ade20k, cityscapes):
        values = np.arange(256, dtype=np.float32)
        for key, value in module.CLSID2LABEL.items():  # the reference's BaseDataset.read, verbatim
            values[values == key] = value
        invalid = ((values < 0) | (values >= len(module.CLASS_NAMES))) & (values != -100)
        lookup = module.LABELS.lookup
        assert np.array_equal(lookup < 0, invalid)
        assert np.array_equal(lookup[values == -100], np.full(int((values == -100).sum()), IGNORE))
        valid = ~invalid & (values != -100)
        assert np.array_equal(lookup[valid], values[valid].astype(np.int16))


@pytest.mark.parametrize("key, parents", [
    ("voc", ["", "VOCdevkit", "VOCdevkit/VOC2012"]),
    ("ade20k", ["", "ADEChallengeData2016"]),
    ("cityscapes", ["", "cityscapes"]),
])
def test_the_dataset_folder_or_its_usual_parents_are_accepted(key, parents, synthetic_datasets):
    expected = READERS[key].samples(synthetic_datasets[key])
    for parent in parents:
        assert READERS[key].samples(synthetic_datasets[key] / parent) == expected


def test_unknown_split_and_missing_folder_are_dataset_errors(synthetic_datasets, tmp_path):
    with pytest.raises(DatasetError, match="no split 'test'.*train, val"):
        READERS["ade20k"].samples(synthetic_datasets["ade20k"], "test")
    with pytest.raises(DatasetError, match="does not exist"):
        READERS["voc"].samples(tmp_path / "absent")
    with pytest.raises(DatasetError, match="(?s)no Cityscapes.*leftImg8bit"):
        READERS["cityscapes"].samples(tmp_path)


def test_reading_the_datasets_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from resnest_zoo.datasets import READERS; "
            "[r.labels.lookup for r in READERS.values()]; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
