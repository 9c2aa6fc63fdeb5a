"Project-level checks: the package imports with its version, README is in step, the console scripts exist."
import configparser, os, subprocess, sys
from pathlib import Path
import simplelxmert

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def settings(): 
    c = configparser.ConfigParser(delimiters=['=']); c.read(ROOT/"settings.ini"); return c["DEFAULT"]

def test_version_matches_settings():
    assert simplelxmert.__version__ == settings()["version"]

def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, str(ROOT/"tools"/"readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_quick_start_has_the_two_commands():
    text = (ROOT/"README.md").read_text()
    assert "make demo" in text and "make test" in text
    assert "make test" in (ROOT/".ci"/"run").read_text()

def test_console_scripts_installed_and_answer_help():
    for spec in settings()["console_scripts"].split():
        name = spec.split("=")[0]
        r = subprocess.run([str(BIN/name), "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (name, r.stderr)

# ---------------------------------------------------------------- the deploy workflow (issue 20)

def workflow(name):
    import yaml
    y = yaml.safe_load((ROOT/".github"/"workflows"/name).read_text())
    y["on"] = y.pop(True, y.get("on"))  # YAML 1.1 reads the key `on` as True
    return y

def pages_step():
    return next(s for s in workflow("deploy.yaml")["jobs"]["deploy"]["steps"] if "Pages for the gh-pages" in s.get("name", ""))

def test_workflows_are_valid_yaml_with_their_jobs():
    for name, job in (("deploy.yaml", "deploy"), ("test.yaml", "test")):
        y = workflow(name)
        assert y["on"] and y["jobs"][job]["runs-on"] and all("uses" in s or "run" in s for s in y["jobs"][job]["steps"]), name

def test_deploy_publishes_docs_then_turns_on_pages_for_gh_pages():
    y = workflow("deploy.yaml")
    steps = y["jobs"]["deploy"]["steps"]
    names = [s.get("name", "") for s in steps]
    publish = next(s for s in steps if "actions-gh-pages" in s.get("uses", ""))
    assert publish["with"]["publish_dir"] == "./_docs" and y["permissions"]["pages"] == "write"
    assert names.index(pages_step()["name"]) > steps.index(publish)  # the branch exists by then
    assert "settings > pages" in pages_step()["run"].lower()        # the one setting, when the token may not

def run_pages_step(tmp_path, pages_branch, post_ok=True):
    "Run the step's script with a stub `gh` that answers like GitHub; return (exit code, output, the gh calls)."
    log, stub = tmp_path/"gh.log", tmp_path/"gh"
    stub.write_text(f"""#!/bin/sh
echo "$@" >> "{log}"
case "$*" in
  "api repos/o/r/pages --jq"*) [ -n "{pages_branch}" ] && echo "{pages_branch}" && exit 0; echo 'HTTP 404' >&2; exit 1;;
  *) [ "{int(post_ok)}" = 1 ];;
esac
""")
    stub.chmod(0o755)
    r = subprocess.run(["bash", "-e", "-c", pages_step()["run"]], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "REPO": "o/r", "GH_TOKEN": "x"})
    return r.returncode, r.stdout + r.stderr, log.read_text().splitlines() if log.exists() else []

def test_pages_step_turns_pages_on_once(tmp_path):
    rc, out, calls = run_pages_step(tmp_path, "")
    assert rc == 0 and calls[-1].startswith("api -X POST repos/o/r/pages") and "source[branch]=gh-pages" in calls[-1], (out, calls)
    (tmp_path/"gh.log").unlink()
    rc, out, calls = run_pages_step(tmp_path, "gh-pages")
    assert rc == 0 and len(calls) == 1, (out, calls)                    # already on: nothing changed
    (tmp_path/"gh.log").unlink()
    rc, out, calls = run_pages_step(tmp_path, "main")
    assert rc == 0 and calls[-1].startswith("api -X PUT"), (out, calls)  # on, but for another branch
    (tmp_path/"gh.log").unlink()
    rc, out, calls = run_pages_step(tmp_path, "", post_ok=False)
    assert rc == 1 and "::error" in out and "gh-pages" in out, out      # the token may not: the setting is named

# ---------------------------------------------------------------- public names (issue 18: the course edition moved code)

# every name of each module's `__all__` before the course edition moved code into the appendix modules
OLD_PUBLIC_NAMES = {
  "features": [
    'COLORS', 'SHAPES', 'SIZES', 'RGB', 'BACKGROUND', 'SIZE_RANGE', 'IMAGENET_MEAN', 'IMAGENET_STD', 'EXTRACTORS',
    'ShapeObject', 'Scene', 'sample_scene', 'draw_scene', 'atomic_write', 'atomic_write_text', 'one_line',
    'generate_shapes_world', 'load_scenes', 'RegionFeatures', 'FeatureStore', 'FeatureStoreWriter', 'load_image',
    'pad_regions', 'whole_image_box', 'normalized_pixels', 'check_device', 'PixelRoIExtractor', 'find_shapes',
    'frcnn_weights_file', 'read_state_dict', 'build_frcnn', 'FasterRCNNExtractor', 'show_regions', 'make_extractor',
    'list_images', 'extract_features', 'extract_cli', 'feature_stats', 'linear_probe'],
  "dataset": [
    'ITM_MATCH', 'ITM_MISMATCH', 'KAGGLE_HEADER', 'SPLITS', 'RELATIONS', 'OPPOSITE', 'RELATION_WORDS',
    'SHAPE_WORDS', 'TEMPLATES', 'RELATION_MARGIN', 'NEGATIVE_KINDS', 'POSITIONS', 'FLIPPED', 'SPECIAL_TOKENS',
    'MAX_LEN', 'TOY_K', 'CaptionRecord', 'image_id', 'check_image_name', 'image_path', 'read_kaggle_csv',
    'read_karpathy_json', 'split_cuts', 'split_by_image', 'check_disjoint_splits', 'read_captions', 'ObjectRef',
    'CaptionSpec', 'describe', 'parse_caption', 'clear_relations', 'find_object', 'caption_truth',
    'caption_is_true', 'true_relations', 'scene_specs', 'scene_captions', 'negative_candidates', 'hard_negatives',
    'sample_hard_negative', 'PositionSpec', 'clear_positions', 'describe_position', 'parse_position_caption',
    'position_truth', 'truth_of', 'position_specs', 'write_shapes_captions', 'canonical_vocabulary',
    'train_tokenizer', 'load_tokenizer', 'encode_captions', 'ITMPair', 'make_eval_pairs', 'position_records',
    'flip_pairs', 'TextOnlyBaseline', 'ToyData', 'make_toy_data', 'toydata_cli', 'ITMDataset', 'ITMPairDataset',
    'collate_itm'],
  "attention": [
    'scaled_dot_product_attention', 'additive_mask', 'random_15bit', 'dropout_mask', 'dropout', 'Dropout',
    'split_heads', 'merge_heads', 'as_additive_mask', 'MultiHeadAttention'],
  "encoders": [
    'LXMERTConfig', 'LanguageEmbeddings', 'VisualEmbeddings', 'AddNorm', 'Intermediate', 'SelfAttentionSublayer',
    'CrossAttentionSublayer', 'TransformerLayer', 'CrossModalityLayer', 'Pooler', 'Encoders', 'LXMERTOutput',
    'LXMERT', 'PackedRows', 'cls_self_attention', 'randomize_weights_', 'random_batch', 'compare_with_hf'],
  "training": [
    'MODEL_INPUTS', 'CONFIG_NAME', 'WEIGHTS_NAME', 'STATE_NAME', 'HISTORY_NAME', 'LEGACY_STATE_NAME', 'STATE_KEY',
    'RANDOM_NEG_EPOCHS', 'RESUME_MAY_CHANGE', 'default_device', 'seed_everything', 'get_rng_state', 'set_rng_state',
    'ITMModel', 'roc_auc', 'itm_loss', 'MLMTransform', 'MLMHead', 'mask_tokens', 'sinusoid_positions',
    'init_sinusoid_positions', 'param_groups', 'fused_adamw_supported', 'make_optimizer', 'warmup_linear',
    'make_scheduler', 'trim_padding', 'model_inputs', 'predict_logits', 'itm_metrics', 'evaluate', 'write_json',
    'DamagedCheckpointError', 'read_config', 'save_state_file', 'load_state_file', 'export_checkpoint',
    'TrainConfig', 'lr_multiplier', 'make_train_scheduler', 'NonFiniteLossError', 'dist_info', 'StopOnInterrupt',
    'save_training_state', 'load_optimizer_state', 'has_training_state', 'load_training_state', 'train',
    'plot_history', 'LivePlot', 'feature_stats', 'check_store', 'CurriculumITMDataset', 'MixedITMDataset',
    'ITMData', 'itm_data', 'toy_itm_data', 'train_parser', 'given_flags', 'train_cli'],
  "inference": [
    'TOY_CHECKPOINT', 'CHECKPOINT_FILES', 'NOT_RECIPE', 'FALLBACK_RECIPE', 'FIRST_LESSON', 'DEMO_FLAGS',
    'checkpoint_dir', 'read_image', 'boxes_next_to', 'sigmoid', 'Predictor', 'show_scores', 'AttentionMaps',
    'box_heat', 'show_box_attention', 'show_word_attention', 'show_matrix', 'box_names', 'grounding', 'recall_at_k',
    'TextBank', 'VisionBank', 'cross_projections', 'caption_batch', 'region_batch', 'encode_texts', 'encode_images',
    'match_pooled', 'pair_batches', 'cached_pair_scores', 'cached_scores', 'naive_scores', 'retrieval_banks',
    'retrieval_eval', 'mean_pool', 'DualEncoder', 'distinct_image_batch', 'fit_dual_encoder', 'rerank',
    'rerank_recall', 'pair_logits', 'itm_accuracy', 'predict_cli', 'recipe_of', 'recipe_argv', 'short_run_recipe',
    'training_progress', 'demo_parser', 'demo_recipe', 'min_demo_images', 'demo', 'demo_cli'],
}


def test_every_public_name_still_imports_from_where_it_did():
    "A name that moved to an appendix module is still importable from its old module (re-exported or through __getattr__)."
    import importlib
    missing = [f"{m}.{n}" for m, names in OLD_PUBLIC_NAMES.items() for n in names
               if not hasattr(importlib.import_module(f"simplelxmert.{m}"), n)]
    assert not missing, missing
