/* Exporting a model with a custom layer (kiln_layer_class) is refused with
 * KILN_E_UNSUPPORTED naming the layer and its class: ONNX has no form for arbitrary C code, and no
 * file is left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/rms_norm.h"
#include "kiln/export.h"

static void test_custom_layer_export_refused(void **state) {
  kiln_model *m;
  kiln_node x;
  assert_int_equal(kiln_model_create(1, &m, NULL), KILN_OK);
  assert_int_equal(kiln_model_input(m, "x", 6, &x, NULL), KILN_OK);
  assert_int_equal(kiln_model_dense(m, x, 4, NULL, &x, NULL), KILN_OK);
  assert_int_equal(
      kiln_model_custom(m, x, &rms_norm_class, rms_norm_config_create(1e-6f), "norm", &x, NULL),
      KILN_OK);
  assert_int_equal(kiln_model_dense(m, x, 1, NULL, &x, NULL), KILN_OK);
  kiln_optimizer o;
  kiln_optimizer_init(&o, KILN_OPTIMIZER_SGD);
  assert_int_equal(kiln_model_compile(m, &o, KILN_LOSS_MEAN_SQUARED_ERROR, NULL, 0, NULL), KILN_OK);
  kiln_export_options opt;
  kiln_export_options_init(&opt);
  kiln_error err = {0};
  kiln_ir_graph *g = NULL;
  assert_int_equal(kiln_model_lower(m, &opt, &g, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "'norm'"));
  assert_non_null(strstr(err.message, "RMSNormalization"));
  assert_null(strstr(err.message, "kind "));
  assert_null(g);
  char path[] = "/tmp/kiln_custom_export_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  unlink(path);
  assert_int_equal(kiln_model_export(m, &opt, path, &err), KILN_E_UNSUPPORTED);
  assert_non_null(strstr(err.message, "norm"));
  assert_int_equal(access(path, F_OK), -1);
  kiln_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_custom_layer_export_refused)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
