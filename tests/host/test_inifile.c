/* INI loading: sections in order with line numbers, continuation lines, duplicates,
 * syntax errors, over-long lines, and --set overrides. */
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

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_good();
    test_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", dir);
    return CHECK_EXIT();
}
