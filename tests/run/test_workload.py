"""The embedded workload is built offline, deterministically, byte for byte."""

import filecmp
import json

from canary_runner.workload import embedded, make_data, rewards, sources


def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files, (cmp.left_only, cmp.right_only, cmp.diff_files)
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors


def test_models_and_tokenizer_are_byte_identical_across_builds(tmp_path, monkeypatch):
    dirs = []
    for name in ("one", "two"):
        monkeypatch.setenv("CANARY_CACHE_DIR", str(tmp_path / name))
        dirs.append([embedded.model_path("embedded:tiny-llama"), embedded.model_path("embedded:tiny-llama", "score"),
                     embedded.tokenizer_path()])
    for a, b in zip(*dirs):
        assert a.name == b.name
        _same_tree(a, b)
    # Cached: a second call returns the same directory without rebuilding.
    assert embedded.model_path("embedded:tiny-llama") == dirs[1][0]


def test_shipped_datasets_match_their_generator(tmp_path):
    written = {p.name for p in make_data.write(tmp_path)}
    shipped = sorted(make_data.DATA_DIR.glob("*.jsonl"))
    assert {p.name for p in shipped} == written == {"sft.jsonl", "preference.jsonl", "prompts.jsonl",
                                                    "sft_heldout.jsonl", "preference_heldout.jsonl"}
    for path in shipped:
        assert path.read_bytes() == (tmp_path / path.name).read_bytes(), path.name
        rows = make_data.HELDOUT_ROWS if "heldout" in path.name else make_data.ROWS
        assert len(path.read_text().splitlines()) == rows


def test_heldout_sets_ask_no_training_question():
    def questions(name):
        rows = [json.loads(line) for line in (make_data.DATA_DIR / f"{name}.jsonl").read_text().splitlines()]
        return [r["prompt"][0]["content"] if "prompt" in r else r["messages"][0]["content"] for r in rows]

    train = set(questions("sft")) | set(questions("preference")) | set(questions("prompts"))
    for name in ("sft_heldout", "preference_heldout"):
        held = questions(name)
        assert len(set(held)) == len(held) == make_data.HELDOUT_ROWS and not set(held) & train
    assert len(sources.load_dataset("embedded:preference-heldout", "dpo")) == make_data.HELDOUT_ROWS
    assert set(sources.load_dataset("embedded:sft_heldout", "sft").column_names) == {"messages"}


def test_tokenizer_has_distinct_pad_and_eos_and_a_chat_template():
    tok = sources.load_tokenizer("embedded:tiny-llama")
    assert tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok("What is 2 plus 3?")["input_ids"]
    assert tok.decode(ids) == "What is 2 plus 3?"


def test_datasets_have_trl_columns_per_training_type():
    assert set(sources.load_dataset(None, "sft").column_names) == {"messages"}
    assert {"prompt", "chosen", "rejected"} <= set(sources.load_dataset(None, "dpo").column_names)
    ds = sources.load_dataset(None, "grpo", max_rows=10)
    assert len(ds) == 10 and "prompt" in ds.column_names


def test_hh_format_is_converted(tmp_path):
    rows = [{"chosen": "\n\nHuman: hi there\n\nAssistant: hello!", "rejected": "\n\nHuman: hi there\n\nAssistant: go away"}] * 4
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pref = sources.load_dataset(str(tmp_path), "dpo")
    assert pref[0] == {"prompt": "Human: hi there\n\nAssistant:", "chosen": " hello!", "rejected": " go away"}
    assert sources.load_dataset(str(tmp_path), "grpo")[0] == {"prompt": "Human: hi there\n\nAssistant:"}
    assert sources.load_dataset(str(tmp_path), "sft")[0]["text"].startswith("Human: hi there")


def test_dataset_with_wrong_columns_is_a_clear_error(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"foo": 1}\n')
    try:
        sources.load_dataset(str(tmp_path / "d.jsonl"), "dpo")
    except sources.WorkloadError as e:
        assert "needs chosen+rejected" in str(e) and "['foo']" in str(e)
    else:
        raise AssertionError("expected WorkloadError")


def test_synthetic_rewards():
    good = [[{"role": "assistant", "content": "2 plus 3 is 5."}]]
    bad = [[{"role": "assistant", "content": "xx"}]]
    assert rewards.format(good) == [1.0] and rewards.format(bad) == [0.0]
    assert rewards.length(good)[0] > rewards.length(bad)[0]
    assert rewards.digits(good, answer=["2 plus 3 is 5."]) == [1.0]
    assert rewards.digits(bad, answer=["2 plus 3 is 5."]) == [0.0]
