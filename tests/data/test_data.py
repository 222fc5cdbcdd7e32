from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from helpers import toy_rows, write_csv, write_jsonl
from qpeft.data import Example, files, load_splits, split_by_input
from qpeft.data.prompts import IGNORE_INDEX, encode_examples, format_prompt
from qpeft.utils.errors import UsageError


def test_e2e_groups_test_references_and_holds_out_whole_mrs(e2e_dir: Path) -> None:
    splits = load_splits("e2e", str(e2e_dir), validation_fraction=0.2, seed=0)
    assert splits.test and all(len(item.references) >= 2 for item in splits.test)
    assert len({item.input for item in splits.test}) == len(splits.test)
    train_inputs = {row.input for row in splits.train}
    validation_inputs = {row.input for row in splits.validation}
    assert validation_inputs and not train_inputs & validation_inputs


def test_e2e_uses_the_official_training_split_when_present(e2e_dir: Path) -> None:
    rows = [{"mr": f"name[Place{i}]", "ref": f"Place{i} is a place."} for i in range(30)]
    write_csv(e2e_dir / "e2e" / "trainset.csv", rows, ["mr", "ref"])
    splits = load_splits("e2e", str(e2e_dir))
    assert len(splits.train) == 30 and len(splits.validation) == 80


def test_e2e_reads_data_dir_from_environment(e2e_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QPEFT_DATA_DIR", str(e2e_dir))
    assert load_splits("e2e").train


def test_e2e_missing_copy_says_how_to_provide_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QPEFT_DATA_DIR", raising=False)
    with pytest.raises(UsageError, match="QPEFT_DATA_DIR.*official release"):
        load_splits("e2e")
    with pytest.raises(UsageError, match="not found under"):
        load_splits("e2e", str(tmp_path))


def test_split_by_input_never_splits_an_input() -> None:
    rows = [Example(f"mr{i % 7}", f"ref{i}") for i in range(50)]
    parts = split_by_input(rows, (0.6, 0.2, 0.2), seed=3)
    assert sum(len(part) for part in parts) == len(rows)
    seen = [{row.input for row in part} for part in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_folder_with_train_and_test_files(toy_data_dir: Path) -> None:
    splits = load_splits(str(toy_data_dir))
    assert len(splits.test) == 6 and all(len(item.references) == 2 for item in splits.test)


def test_single_csv_file_is_split_three_ways(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pairs.csv", [{"src": r["input"], "tgt": r["target"]} for r in toy_rows(60, 5)],
                     ["src", "tgt"])
    splits = load_splits(str(path), input_column="src", target_column="tgt")
    assert splits.train and splits.validation and splits.test


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("", ".jsonl", "no rows"),
        ('{"input": "a"}\n', ".jsonl", "no column 'target'"),
        ('{"input": "a", "target": "b"}\nnot json\n', ".jsonl", "line 2 is not valid JSON"),
        ("input,target\n", ".csv", "no rows"),
        ("input,other\na,b\n", ".csv", "no column 'target'"),
        ("input,target\na,b,c\n", ".csv", "different number of fields"),
        ("input,target,input\na,b,c\n", ".csv", "names column 'input' more than once"),
        ('{"input": "a", "target": "  "}\n', ".jsonl", "row 1: 'target' is empty"),
        ("input,target\na,b\nc,\n", ".csv", "row 3: 'target' is empty"),
    ],
)
def test_malformed_files_give_one_line_errors(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as error:
        load_splits(str(path))
    assert "\n" not in str(error.value)


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"input": "caf\xe9", "target": "x"}\n')
    with pytest.raises(UsageError, match="not valid UTF-8"):
        load_splits(str(path))


def test_unknown_dataset() -> None:
    with pytest.raises(UsageError, match="unknown dataset"):
        load_splits("no-such-dataset")


def test_loss_mask_covers_prompt_and_eos_is_appended(tokenizer) -> None:
    example = Example("name[Aromi], food[French], area[riverside]", "Aromi serves French food.")
    (encoded,) = encode_examples([example], tokenizer, "plain", max_length=512)
    prompt_ids = tokenizer(format_prompt(example.input, tokenizer))["input_ids"]
    labels = encoded["labels"]
    assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert labels[len(prompt_ids):] == encoded["input_ids"][len(prompt_ids):]
    assert encoded["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded["input_ids"][len(prompt_ids):-1]).strip() == example.target


def test_truncation_warns_with_a_count(tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    examples = [Example("name[Aromi]", "Aromi serves French food. " * 20), Example("name[Cotto]", "Cotto.")]
    with caplog.at_level(logging.WARNING):
        encoded = encode_examples(examples, tokenizer, "plain", max_length=16)
    assert len(encoded[0]["input_ids"]) == 16
    assert "1 of 2 examples" in caplog.text


def test_chat_template_needs_one(tokenizer) -> None:
    with pytest.raises(UsageError, match="no chat template"):
        format_prompt("x", tokenizer, "chat")



def test_training_examples_encoded_on_draw_equal_the_eager_encoding(tokenizer, caplog) -> None:  # noqa: ANN001
    from qpeft.training.trainer import EncodedExamples

    examples = [Example(row["input"], row["target"]) for row in toy_rows(12, seed=5)]
    examples.append(Example("name[" + "Aromi " * 40 + "]", "Long."))  # longer than max_length below
    lazy = EncodedExamples(examples, tokenizer, "plain", 40)
    with caplog.at_level(logging.WARNING):
        eager = encode_examples(examples, tokenizer, "plain", 40)
    assert "1 of 13 examples were longer" in caplog.text
    assert len(lazy) == 13 and lazy.truncated == 0  # nothing is tokenised before it is drawn
    assert [lazy[i] for i in range(13)] == eager
    lazy[12]
    assert lazy.truncated == 1 and lazy.drawn == set(range(13))  # a second draw is not counted again


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path: Path) -> None:
    rows = [{"input": r["input"], "target": r["target"]} for r in toy_rows(30, 3)]
    plain = write_csv(tmp_path / "plain.csv", rows, ["input", "target"])
    marked = tmp_path / "marked.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_splits(str(marked)).train == load_splits(str(plain)).train


def test_a_quoted_csv_field_may_hold_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('input,target\n"first\nline",one\nsecond,"two\nlines"\nthird,three\n')
    rows = files.read_rows(path, "input", "target")
    assert rows == [Example("first\nline", "one"), Example("second", "two\nlines"), Example("third", "three")]


def test_a_bad_row_after_a_multi_line_field_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('input,target\n"a\nb",one\nc,\n')
    with pytest.raises(UsageError, match="row 4: 'target' is empty"):
        files.read_rows(path, "input", "target")


@pytest.mark.parametrize("count", [3, 4, 5, 7])
def test_every_split_of_a_small_single_file_is_non_empty(tmp_path: Path, count: int) -> None:
    path = write_jsonl(tmp_path / "small.jsonl", [{"input": f"in {i}", "target": f"out {i}"} for i in range(count)])
    splits = load_splits(str(path))
    assert splits.train and splits.validation and splits.test
    assert len(splits.train) + len(splits.validation) + sum(len(i.references) for i in splits.test) == count


def test_a_data_folder_with_one_training_input_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"input": "a", "target": "b"}] * 3)
    write_jsonl(tmp_path / "test.jsonl", [{"input": "c", "target": "d"}])
    with pytest.raises(UsageError, match="at least 2 distinct inputs"):
        load_splits(str(tmp_path))


# every character the csv and json modules must carry through: line breaks inside a field, doubled quotes,
# the separators str.splitlines() would break at (U+2028, \x0b, \x1c), emoji, and white space at the edges
AWKWARD = ["Line one\nLine two", 'He said ""hi"", twice', "a\u2028b\x0bc\x1cd", "emoji 🎉🍝 ok",
           " padded ", "comma, inside", "crlf\r\nline"]


def test_a_csv_round_trip_keeps_every_field_byte_identical(tmp_path: Path) -> None:
    rows = [{"input": f"{text} #{i}", "target": AWKWARD[(i + 1) % len(AWKWARD)]} for i, text in enumerate(AWKWARD)]
    path = tmp_path / "awkward.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as handle:  # with a byte-order mark
        writer = csv.DictWriter(handle, fieldnames=["input", "target"])
        writer.writeheader()
        writer.writerows(rows)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    read = files.read_rows(path, "input", "target")
    assert [(e.input, e.target) for e in read] == [(r["input"], r["target"]) for r in rows]
    assert [e.input.encode() for e in read] == [r["input"].encode() for r in rows]


def test_a_jsonl_round_trip_keeps_every_field_byte_identical(tmp_path: Path) -> None:
    rows = [{"input": f"{text} #{i}", "target": AWKWARD[(i + 1) % len(AWKWARD)]} for i, text in enumerate(AWKWARD)]
    path = tmp_path / "awkward.jsonl"
    # ensure_ascii=False writes U+2028 raw, inside the JSON string, where splitlines() would break the line
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    read = files.read_rows(path, "input", "target")
    assert [(e.input, e.target) for e in read] == [(r["input"], r["target"]) for r in rows]


def test_only_dart_s_published_test_file_may_hold_an_empty_reference(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    for name in ("dart", "sst2"):
        (tmp_path / name).mkdir()
        write_jsonl(tmp_path / name / "train.jsonl", toy_rows(20, 1))
        write_jsonl(tmp_path / name / "test.jsonl", [{"input": "a", "target": "one"}, {"input": "a", "target": ""}])
    with caplog.at_level(logging.WARNING):
        splits = load_splits("dart", str(tmp_path))
    assert [item.references for item in splits.test] == [("one",)]
    assert "left out 1 row(s) with an empty target (row 2)" in caplog.text
    with pytest.raises(UsageError, match="row 2: 'target' is empty"):
        load_splits("sst2", str(tmp_path))
