/* export.h: `runexp export RUN_DIR|CHECKPOINT model.onnx [--opset N]`: a run's network with its
 * trained weights as one ONNX file (onnx.h) that serving tools and ONNX Runtime read.
 *
 * The graph takes "input", float32 (N, C, H, W) in the scale the data plugin reads images in
 * (for cifar10: RGB in [0, 1]), and begins with the data set's normalization, (input - mean) / std
 * as the data plugin reports applying it (rx_data_info's mean and std, configured or computed
 * from the training split; none when it reports none), so a caller feeds pixels, never the
 * training statistics. It ends at "logits", (N, classes), as
 * runexp's forward gives them: no softmax, and no test-time views (those are evaluation's
 * average of several forwards). Every layer maps itself through its plugin's export_onnx; the
 * residual blocks are Add nodes. */
#ifndef RUNEXP_EXPORT_H
#define RUNEXP_EXPORT_H

#include "plugin.h"

/* Exports target (a run folder: its config.lua and best.safetensors; or a checkpoint file, with
 * the config.lua beside it) to out, atomically. -1 with the message in err (ERR_LEN bytes). */
int export_run(const plugin_path *path, const char *target, const char *out, int opset, char *err);

/* The command line after `runexp export`: returns the exit status (0, 1 failed, 2 usage) after
 * printing what went wrong. */
int export_main(const plugin_path *path, int argc, char **argv);

#endif
