/* INI loading: sections in order with line numbers, continuation lines, duplicates,
 * syntax errors, over-long lines, lines inih reads differently from a plain split (found by
 * tests/fuzz/fuzz_ini.c), and --set overrides. */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "inifile.h"
#include "services.h"

static char dir[] = "/tmp/tp-test-inifile-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_good(void)
{
    const char *path = write_file("good.ini", "; comment\n"
                                              "[pipeline]\n"
                                              "seed = 7\n"
                                              "\n"
                                              "[augment.flip]\n"
                                              "[schedule]\n"
                                              "plugin = piecewise\n"
                                              "boundaries = 10,\n"
                                              "   20, 30\n"
                                              "factors = 0.1 ; inline comment\n");
    ini_document doc;
    CHECK(ini_load(path, &doc) == TP_OK);
    CHECK(doc.n_sections == 3);
    CHECK(strcmp(doc.sections[0].name, "pipeline") == 0 && doc.sections[0].line == 2);
    CHECK(strcmp(doc.sections[1].name, "augment.flip") == 0 && doc.sections[1].line == 5);
    CHECK(doc.sections[1].n_kvs == 0);
    const param_kv *kv;
    ini_section *s = ini_find_section(&doc, "schedule");
    CHECK(s && strcmp(ini_get(s, "boundaries", &kv), "10, 20, 30") == 0 && kv->line == 8);
    CHECK(s && strcmp(ini_get(s, "factors", NULL), "0.1") == 0);
    CHECK(ini_get(&doc.sections[0], "seed", &kv) && kv->line == 3);

    CHECK(ini_override(&doc, "pipeline.seed=9") == TP_OK);
    CHECK(strcmp(ini_get(&doc.sections[0], "seed", &kv), "9") == 0 && kv->line == 0);
    CHECK(ini_override(&doc, "augment.flip.probability=0.25") == TP_OK);
    CHECK(strcmp(ini_get(&doc.sections[1], "probability", NULL), "0.25") == 0);
    CHECK(ini_override(&doc, "logger.csv.plugin=csv") == TP_OK);
    CHECK(ini_find_section(&doc, "logger.csv") != NULL);
    CHECK(ini_override(&doc, "seed=9") == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "expected section.key=value");
    CHECK(ini_override(&doc, "pipeline.seed") == TP_ERR_INVALID);
    ini_free(&doc);
}

static void expect_load_error(const char *name, const char *text, const char *needle)
{
    const char *path = write_file(name, text);
    ini_document doc;
    CHECK(ini_load(path, &doc) != TP_OK);
    CHECK_CONTAINS(services_last_error(), needle);
}

static void test_errors(void)
{
    expect_load_error("dupkey.ini", "[model]\nplugin = a\ndepth = 1\nplugin = b\n",
                      "dupkey.ini:4: [model] key 'plugin' given twice (first at line 2)");
    expect_load_error("dupsec.ini", "[model]\n[optimizer]\n[model]\n",
                      "dupsec.ini:3: section [model] given twice (first at line 1)");
    expect_load_error("syntax.ini", "[model]\nthis line has no equals sign\n",
                      "syntax.ini:2: syntax error");
    expect_load_error("nosection.ini", "seed = 1\n", "nosection.ini:1: 'seed' appears before any [section]");
    char longline[400];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "[a]\nk = ", 8);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = '\0';
    expect_load_error("long.ini", longline, "long.ini:2: line too long");
    ini_document doc;
    CHECK(ini_load("/nonexistent/x.ini", &doc) == TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(services_last_error(), "/nonexistent/x.ini: cannot read configuration");
}

/* Each of these was read into the wrong section, or refused with a wrong message, before
 * inifile.c saw the headers the way inih does. */
static void test_inih_agreement(void)
{
    const param_kv *kv;
    ini_document doc;
    /* A byte order mark (Windows editors write one), white space inside the brackets, and
     * a header indented by a vertical tab (not after a key, so not a continuation). */
    const char *path = write_file("bom.ini", "\xef\xbb\xbf[ data ]\n\v[optimizer]\n"
                                             "lr = 0.1\n[ model ]\nplugin = resnet\n");
    CHECK(ini_load(path, &doc) == TP_OK);
    CHECK(doc.n_sections == 3 && strcmp(doc.sections[0].name, "data") == 0);
    CHECK(doc.n_sections == 3 && strcmp(doc.sections[1].name, "optimizer") == 0 &&
          doc.sections[1].line == 2 && ini_get(&doc.sections[1], "lr", NULL));
    ini_section *model = ini_find_section(&doc, "model");
    CHECK(model && ini_get(model, "plugin", &kv) && kv->line == 5);
    ini_free(&doc);

    /* An indented line after a key continues it, even when it looks like a header; inih
     * names the key of a continuation by its first 49 characters only. */
    path = write_file("indented.ini", "[a]\nk = 1\n  [b]\nm = 2\n"
                                      "a_key_name_that_is_longer_than_forty_nine_characters = x\n"
                                      "  y\n");
    CHECK(ini_load(path, &doc) == TP_OK);
    CHECK(doc.n_sections == 1 && doc.sections[0].n_kvs == 3);
    CHECK(strcmp(ini_get(&doc.sections[0], "k", NULL), "1 [b]") == 0);
    CHECK(ini_get(&doc.sections[0], "m", &kv) && kv->line == 4);
    CHECK(strcmp(ini_get(&doc.sections[0],
                         "a_key_name_that_is_longer_than_forty_nine_characters", NULL),
                 "x y") == 0);
    ini_free(&doc);

    /* inih cuts a section name to 49 characters: the keys of [...B] went into [...]. */
    expect_load_error("longsection.ini",
                      "[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\nx = 1\n"
                      "[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaB]\ny = 2\n",
                      "longsection.ini:3: section name longer than 49 characters");
    expect_load_error("empty.ini", "[ ]\nk = 1\n", "empty.ini:1: empty section name");

    /* A NUL byte hid the length of a line from the check, and inih read its tail as a line
     * of its own (numbering every later line one too high). */
    char text[256] = "[a]\nk = 1";
    size_t n = strlen(text) + 1; /* keep the NUL */
    memset(text + n, 'x', 200);
    memcpy(text + n + 200, "\n[b]\n", 5);
    FILE *fp = fmemopen(text, n + 205, "r");
    CHECK(fp && ini_load_stream(fp, "nul.ini", &doc) == TP_ERR_INVALID);
    CHECK_CONTAINS(services_last_error(), "nul.ini:2: NUL byte");
    if (fp)
        fclose(fp);

    /* A directory opens but cannot be read: it was an empty configuration. */
    CHECK(ini_load(dir, &doc) == TP_ERR_IO);
    CHECK_CONTAINS(services_last_error(), "cannot read configuration");
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_good();
    test_errors();
    test_inih_agreement();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
    return CHECK_EXIT();
}
