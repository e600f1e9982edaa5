/* Parameter tables: conversion of every type, ranges, choices, lists, defaults, required
 * keys, unknown keys with "did you mean", relative paths, and the formatting back. */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "params.h"
#include "services.h"

typedef struct fixture_config {
    int flag;
    int64_t count;
    double rate;
    const char *label;
    const char *file;
    int mode;
    tp_int_list steps;
    tp_float_list factors;
} fixture_config;

const tp_plugin_info *fixture_entry(void);

static const tp_component *component_of_kind(tp_kind kind)
{
    const tp_plugin_info *info = fixture_entry();
    for (size_t i = 0; i < info->n_components; i++)
        if (info->components[i]->kind == kind)
            return info->components[i];
    return NULL;
}

/* Builds the model fixture from kvs; returns the status, and the config in *cfg. */
static tp_status build(const param_kv *kvs, size_t n, param_config *cfg)
{
    return params_build(component_of_kind(TP_KIND_MODEL), "model", kvs, n, cfg);
}

static void test_defaults(void)
{
    param_config cfg;
    CHECK(build(NULL, 0, &cfg) == TP_OK);
    const fixture_config *c = cfg.data;
    CHECK(c->flag == 0);
    CHECK(c->count == 3);
    CHECK(c->rate == 0.5);
    CHECK(strcmp(c->label, "none") == 0);
    CHECK(c->file == NULL);
    CHECK(c->mode == 0);
    CHECK(c->steps.count == 0);
    params_release(&cfg);
}

static void test_every_type(void)
{
    param_kv kvs[] = {
        { "flag", "Yes", "a.ini", 2 },      { "count", "100", "a.ini", 3 },
        { "rate", "1e-1", "a.ini", 4 },     { "label", "hello world", "a.ini", 5 },
        { "file", "data/x.bin", "conf/a.ini", 6 }, { "mode", "careful", "a.ini", 7 },
        { "steps", "10, 20,30", "a.ini", 8 }, { "factors", "0.1,0.5", "a.ini", 9 },
    };
    param_config cfg;
    CHECK(build(kvs, 8, &cfg) == TP_OK);
    const fixture_config *c = cfg.data;
    CHECK(c->flag == 1);
    CHECK(c->count == 100);
    CHECK(fabs(c->rate - 0.1) < 1e-15);
    CHECK(strcmp(c->label, "hello world") == 0);
    CHECK(c->file && strcmp(c->file, "conf/data/x.bin") == 0); /* relative to the INI */
    CHECK(c->mode == 1);
    CHECK(c->steps.count == 3 && c->steps.values[0] == 10 && c->steps.values[2] == 30);
    CHECK(c->factors.count == 2 && c->factors.values[1] == 0.5);
    char buf[256];
    const tp_component *m = component_of_kind(TP_KIND_MODEL);
    params_format(&m->params[6], cfg.data, buf, sizeof buf);
    CHECK(strcmp(buf, "10,20,30") == 0);
    params_format(&m->params[5], cfg.data, buf, sizeof buf);
    CHECK(strcmp(buf, "careful") == 0);
    params_format(&m->params[0], cfg.data, buf, sizeof buf);
    CHECK(strcmp(buf, "true") == 0);
    params_release(&cfg);
}

static void expect_error(const char *key, const char *value, const char *needle)
{
    param_kv kv = { key, value, "conf/x.ini", 12 };
    param_config cfg;
    tp_status st = build(&kv, 1, &cfg);
    CHECK(st == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), needle);
    CHECK_CONTAINS(services_last_error(), "conf/x.ini:12:");
    CHECK(cfg.data == NULL);
}

static void test_errors(void)
{
    expect_error("count", "101", "count = 101: out of range (expected int in [1, 100])");
    expect_error("count", "0", "out of range");
    expect_error("count", "2.5", "not an integer");
    expect_error("count", "99999999999999999999", "integer out of range");
    expect_error("count", "", "empty value");
    expect_error("rate", "-0.1", "rate = -0.1: out of range (expected float in [0, 1])");
    expect_error("rate", "nan", "not a finite number");
    expect_error("rate", "fast", "not a number");
    expect_error("flag", "maybe", "not a boolean (expected true or false)");
    expect_error("mode", "carefull", "unknown choice (did you mean 'careful'?) (expected one of: fast, careful)");
    expect_error("steps", "1,,2", "empty list element");
    expect_error("steps", "1,-2", "element 2 '-2' is out of range");
    expect_error("cuont", "3", "unknown key 'cuont' for model 'fixture_model' (did you mean 'count'?)");
    expect_error("zzzzzz", "3", "unknown key 'zzzzzz' for 'fixture_model' (see `trainpipe plugins fixture_model`)");
}

static void test_required(void)
{
    const tp_component *src = component_of_kind(TP_KIND_SOURCE);
    param_config cfg;
    param_kv header = { "source.train", "", "p.ini", 4 };
    CHECK(params_build_at(src, "source.train", &header, NULL, 0, &cfg) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "p.ini:4: [source.train] missing required key 'path'");
    param_kv kv = { "path", "/abs/data", "p.ini", 5 };
    CHECK(params_build_at(src, "source.train", &header, &kv, 1, &cfg) == TP_OK);
    CHECK(strcmp(((const fixture_config *)cfg.data)->file, "/abs/data") == 0);
    params_release(&cfg);
}

static void test_last_value_wins(void)
{
    param_kv kvs[] = { { "count", "5", "a.ini", 3 }, { "count", "7", "--set", 0 } };
    param_config cfg;
    CHECK(build(kvs, 2, &cfg) == TP_OK);
    CHECK(((const fixture_config *)cfg.data)->count == 7);
    params_release(&cfg);
}

/* Bounds beyond 2^53 (pipeline.seed's 9.2e18): an integer just past one rounded onto it as
 * a double and was accepted; so did list elements. Found by tests/fuzz/fuzz_params.c. */
typedef struct wide_config {
    int64_t seed;
    tp_int_list seeds;
} wide_config;

static void test_wide_int_range(void)
{
    static const tp_param_def defs[] = {
        TP_PARAM_DEF_INT(wide_config, seed, "seed", "1", -9.2e18, 9.2e18, "a seed"),
        { "seeds", TP_PARAM_INT_LIST, "", TP_PARAM_FLAG_HAS_MIN | TP_PARAM_FLAG_HAS_MAX, 0,
          9.2e18, NULL, offsetof(wide_config, seeds), "seeds" },
    };
    static const tp_component wide = { .size = sizeof(tp_component), .kind = TP_KIND_MODEL,
                                       .name = "wide", .params = defs, .n_params = 2,
                                       .config_size = sizeof(wide_config) };
    param_config cfg;
    param_kv at_max[] = { { "seed", "9200000000000000000", "w.ini", 1 },
                          { "seeds", "0,9200000000000000000", "w.ini", 2 } };
    CHECK(params_build(&wide, "model", at_max, 2, &cfg) == TP_OK);
    CHECK(((const wide_config *)cfg.data)->seed == 9200000000000000000);
    params_release(&cfg);
    param_kv at_min = { "seed", "-9200000000000000000", "w.ini", 1 };
    CHECK(params_build(&wide, "model", &at_min, 1, &cfg) == TP_OK);
    params_release(&cfg);
    param_kv over = { "seed", "9200000000000000001", "w.ini", 3 };
    CHECK(params_build(&wide, "model", &over, 1, &cfg) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(),
                   "w.ini:3: [model] seed = 9200000000000000001: out of range");
    param_kv under = { "seed", "-9200000000000000001", "w.ini", 4 };
    CHECK(params_build(&wide, "model", &under, 1, &cfg) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "out of range");
    param_kv element_over = { "seeds", "1,9200000000000000512", "w.ini", 5 };
    CHECK(params_build(&wide, "model", &element_over, 1, &cfg) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "element 2 '9200000000000000512' is out of range");
    CHECK(cfg.data == NULL);
}

static void test_closest(void)
{
    const char *const words[] = { "batch_size", "epochs", "seed", NULL };
    CHECK(params_closest("batchsize", words) && strcmp(params_closest("batchsize", words), "batch_size") == 0);
    CHECK(params_closest("epoch", words) && strcmp(params_closest("epoch", words), "epochs") == 0);
    CHECK(params_closest("learning_rate", words) == NULL);
}

static void test_instance(void)
{
    instance inst;
    const tp_component *m = component_of_kind(TP_KIND_MODEL);
    CHECK(instance_create(m, (const char *const[]){ "count=9", NULL }, &inst) == TP_OK);
    CHECK(inst.self && ((const fixture_config *)inst.self)->count == 9);
    instance_destroy(&inst);
    CHECK(instance_create(m, (const char *const[]){ "count", NULL }, &inst) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(),
                   "<arguments>: [fixture_model] 'count': expected key=value");
}

int main(void)
{
    test_defaults();
    test_every_type();
    test_errors();
    test_required();
    test_last_value_wins();
    test_wide_int_range();
    test_closest();
    test_instance();
    return CHECK_EXIT();
}
