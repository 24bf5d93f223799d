/* A custom layer (examples/rms_norm.h: RMS normalization with a learned per-feature
 * gain, written against kiln_layer_class) in the chapter 4 IMDB model: 10,000-word
 * multi-hot -> Dense 16 relu -> RMSNormalization -> Dense 16 relu -> Dense 1 sigmoid,
 * adam, batch 512, 4 epochs, evaluated on the 25,000 test reviews next to the same model
 * without it (same seed). --variant plain trains only the model without it. --output
 * FILE.onnx exports the trained model with the layer (its lower hook makes it standard
 * ONNX nodes): run it with kiln's runtime or ONNX Runtime, `kiln quantize` it to int8. */
#include <stdio.h>
#include <string.h>

#include "example_common.h"
#include "kiln/export.h"
#include "rms_norm.h"

static kiln_model *build(uint64_t seed, int with_norm, kiln_error *err) {
  kiln_model *m;
  kiln_node x;
  example_check(kiln_model_create(seed, &m, err), "model", err);
  example_check(kiln_model_input(m, "review", 10000, &x, err), "model", err);
  kiln_dense_options d;
  kiln_dense_options_init(&d);
  d.activation = KILN_ACTIVATION_RELU;
  example_check(kiln_model_dense(m, x, 16, &d, &x, err), "model", err);
  if (with_norm) {
    example_check(rms_norm_add(m, x, 1e-6f, "rms_norm", &x, err), "model", err);
  }
  example_check(kiln_model_dense(m, x, 16, &d, &x, err), "model", err);
  d.activation = KILN_ACTIVATION_SIGMOID;
  example_check(kiln_model_dense(m, x, 1, &d, &x, err), "model", err);
  example_check(kiln_model_set_output(m, x, err), "model", err);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"accuracy"};
  example_check(kiln_model_compile(m, &opt, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, err),
                "compile", err);
  return m;
}

typedef struct result {
  double loss, accuracy, first_loss, last_loss, seconds;
  long long params;
} result;

static result run(const example_args *a, int with_norm, const kiln_dataset *train,
                  const kiln_dataset *test) {
  kiln_error err = {0};
  result r;
  double t0 = example_now();
  kiln_model *m = build(a->seed, with_norm, &err);
  r.params = (long long)kiln_model_param_count(m);
  kiln_fit_options fo;
  example_fit_options(a, 4, 512, &fo);
  kiln_history h = {0};
  example_check(kiln_model_fit(m, &train->x, &train->y, &fo, &h, &err), "fit", &err);
  r.seconds = example_now() - t0;
  r.first_loss = kiln_history_get(&h, "loss", 0);
  r.last_loss = kiln_history_get(&h, "loss", h.epochs - 1);
  kiln_logs logs;
  example_check(kiln_model_evaluate(m, &test->x, &test->y, 512, &logs, &err), "evaluate", &err);
  r.loss = kiln_logs_get(&logs, "loss");
  r.accuracy = kiln_logs_get(&logs, "accuracy");
  if (with_norm && a->output) {
    kiln_export_options eo;
    kiln_export_options_init(&eo);
    example_check(kiln_model_export(m, &eo, a->output, &err), "export", &err);
  }
  kiln_history_free(&h);
  kiln_model_free(m);
  return r;
}

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv, "usage: example_custom_layer [--variant rms_norm|plain] [--output MODEL.onnx] [flags]", &a);
  int plain_only = a.variant && strcmp(a.variant, "plain") == 0;
  if (a.variant && !plain_only && strcmp(a.variant, "rms_norm") != 0) {
    fprintf(stderr, "error: unknown --variant %s (rms_norm or plain)\n", a.variant);
    return 2;
  }
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  lo.num_words = 10000;
  kiln_dataset train = {0}, test = {0};
  example_check(kiln_dataset_load("imdb", &lo, &train, &test, &err), "imdb", &err);
  printf("{\"example\": \"custom_layer\", \"layer\": \"RMSNormalization\", \"seed\": %llu, "
         "\"epochs\": %d",
         (unsigned long long)a.seed, a.epochs ? a.epochs : 4);
  if (!plain_only) {
    result r = run(&a, 1, &train, &test);
    printf(", \"params\": %lld, \"first_loss\": %.4f, \"last_loss\": %.4f, \"test_loss\": %.4f, "
           "\"test_accuracy\": %.4f, \"train_seconds\": %.2f",
           r.params, r.first_loss, r.last_loss, r.loss, r.accuracy, r.seconds);
  }
  if (!a.variant || plain_only) {
    result p = run(&a, 0, &train, &test);
    printf(", \"plain_params\": %lld, \"plain_test_loss\": %.4f, \"plain_test_accuracy\": %.4f",
           p.params, p.loss, p.accuracy);
  }
  printf("}\n");
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  return 0;
}
