#!/usr/bin/env bash
# Puts each planted bug of issue 25 item 7 back, one at a time, into a copy of src/ at HEAD
# and runs the test that must catch it (tests/test_planted_bugs.py). Prints one line per
# bug: "caught" or "SURVIVED". Usage: bash benchmarks/planted_bugs.sh
cd "$(dirname "$0")/.."
WORK="${TMPDIR:-/tmp}/planted-bugs"
run() {  # FILE OLD NEW TEST: replace OLD by NEW in FILE, then run TEST
  rm -rf "$WORK" && mkdir -p "$WORK" && git archive HEAD src | tar -x -C "$WORK"
  python3 - "$WORK/$1" "$2" "$3" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
assert old in text, (path, old)
open(path, "w").write(text.replace(old, new))
PY
  if OMP_NUM_THREADS=1 PYTHONPATH="$WORK/src" .venv/bin/python -m pytest -q -p no:cacheprovider -x "$4" >"$WORK/out" 2>&1; then
    echo "SURVIVED: $1 :: $2 -> $3"
  else
    echo "caught:   $1 :: $(grep -m1 -E '^FAILED|^ERROR' "$WORK/out")"
  fi
}
T=tests/test_planted_bugs.py
run src/dense_readout/adapters/structural_graph.py "reversed(candidates)" "candidates" "$T::test_structural_split_is_at_the_last_pool_over_a_real_grid"
run src/dense_readout/adapters/structural_graph.py "(len(node.args) < 2 or node.args[1] not in tensors)" "True" "$T::test_a_squared_pooled_vector_is_not_affine_and_says_so_before_any_call"
run src/dense_readout/quantus.py 'include_bias=bool(options.get("include_bias", True))' 'include_bias=bool(options.get("include_bias", False))' "$T::test_quantus_explain_includes_the_bias_by_default"
run src/dense_readout/_target_layers.py "transform = reshape_transform if reshape_transform is not None else adapter.reshape_transform()" "transform = reshape_transform" "$T::test_explicit_grid_layer_of_a_vit_keeps_the_token_transform"
run src/dense_readout/captum.py "return (means - output).abs().amax(dim=1)" "return (means - output).amax(dim=1)" "$T::test_captum_delta_for_all_classes_is_the_largest_absolute_residual"
run src/dense_readout/patches/index_query.py "divmod(cell, cols)" "divmod(cell, rows)" "$T::test_patch_index_names_cells_row_then_column_on_a_2x3_grid"
run src/dense_readout/attacks/pgd.py "clamp(-eps, eps)" "clamp(0, eps)" "$T::test_pgd_perturbation_reaches_both_ends_of_the_budget"
run src/dense_readout/_boxes.py "(ious >= delta)" "(ious > delta)" "$T::test_maxboxacc_counts_an_iou_of_exactly_delta"
run src/dense_readout/experiments/synthetic_metrics.py '"loc": pct(self.per_image_loc_sum, self.images_with_fg)' '"loc": pct(self.per_image_loc_sum, self.images)' "$T::test_per_image_loc_skips_images_without_foreground"
