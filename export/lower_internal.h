/* kiln export — what lower.c takes from lower_custom.c. Private to export/. */
#ifndef KILN_EXPORT_LOWER_INTERNAL_H
#define KILN_EXPORT_LOWER_INTERNAL_H

#include "kiln/export.h"

/* Lowers custom layer `node` (info l) reading value `input` with its class's lower hook;
 * its output value is named after the layer. KILN_E_UNSUPPORTED naming the layer and its
 * class when the class has no hook. */
kiln_status kiln_lower_custom_layer(kiln_ir_graph *g, const kiln_model *m, kiln_node node,
                                    const kiln_layer_info *l, const char *input, int opset,
                                    kiln_error *err);

#endif
