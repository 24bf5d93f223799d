/* The ticket classifier example (listings 7.9-7.13) end to end: it needs no data set
 * (its inputs are random, as the book's), so it runs in the quick suite. Its JSON line
 * must show data by name predicting as data by position, the feature extraction model
 * sharing the features' weights, finite figures, and the saved checkpoint must load
 * back as the two-output graph. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/train.h"

static double field(const char *json, const char *key) {
  char pat[96];
  snprintf(pat, sizeof pat, "\"%s\": ", key);
  const char *at = strstr(json, pat);
  if (!at) fail_msg("no \"%s\" in %s", key, json);
  return strtod(at + strlen(pat), NULL);
}

static void test_ticket_classifier(void **state) {
  const char *bin = getenv("KILN_BINARY_DIR");
  const char *model = "ticket_classifier_test.kiln";
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s/examples/example_ticket_classifier' --seed 3 --output %s",
           bin ? bin : ".", model);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char buf[4096], line[4096] = "", summary[16384] = "";
  size_t at = 0;
  while (fgets(buf, sizeof buf, p)) {
    snprintf(line, sizeof line, "%s", buf);
    at += (size_t)snprintf(summary + at, at < sizeof summary ? sizeof summary - at : 0, "%s", buf);
    if (at >= sizeof summary) at = sizeof summary - 1;
  }
  int rc = pclose(p);
  if (rc != 0) fail_msg("%s exited with %d", cmd, rc);
  print_message("%s", line);
  assert_non_null(strstr(line, "\"predict_by_name_matches\": true"));
  assert_non_null(strstr(line, "\"features_shared\": true"));
  assert_non_null(strstr(summary, "concatenate (Concatenate)"));
  assert_non_null(strstr(summary, "title[0][0], text_body[0][0], tags[0][0]"));
  assert_non_null(strstr(summary, "difficulty (Dense)"));
  const char *keys[] = {"loss", "priority_loss", "department_loss", "priority_mae",
                        "department_accuracy", "difficulty_loss", "difficulty_accuracy"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    assert_true(isfinite(field(line, keys[i])));
  assert_float_equal(field(line, "loss"),
                     field(line, "priority_loss") + field(line, "department_loss"), 2e-4);
  /* The checkpoint is the two-output graph with its per-output compile settings. */
  kiln_model *m;
  kiln_error err = {0};
  assert_int_equal(kiln_model_load(model, &m, &err), KILN_OK);
  unlink(model);
  assert_int_equal(kiln_model_input_count(m), 3);
  assert_int_equal(kiln_model_output_count(m), 2);
  assert_int_equal(kiln_model_output_loss(m, 1), KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY);
  assert_int_equal(kiln_model_param_count(m), 1286789);
  kiln_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_ticket_classifier)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
