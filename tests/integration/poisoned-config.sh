# Sourced by test-train.tap and test-deferred.tap.
# poisoned_config IN FIRST COUNT [MODEL]: prints the pipeline IN with training batches
# FIRST..FIRST+COUNT-1 filled with NaN by the test plugin's poison_batch augmenter
# (train_fixture_plugin.c); MODEL, when given, replaces the ResNet (pooled_linear lets the
# NaN reach the loss).
poisoned_config() {
    local in=$1 first=$2 count=$3 model=${4:-}
    if [ -n "$model" ]; then
        sed "s/^plugin = resnet/plugin = $model/; /^family\|^depth\|^width = 16/d" "$in"
    else
        cat "$in"
    fi
    printf '\n[augment.poison_batch]\nbatch = %s\ncount = %s\n' "$first" "$count"
}
