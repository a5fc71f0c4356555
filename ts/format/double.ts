/**
 * Initial value for number fields that grow past 2^30 (stream offsets, byte counters): not an
 * integer, so V8 gives the field its double representation when the object is created; the
 * constructor then sets the real start value (0). A field that starts as a small integer is
 * generalized when it first passes 2^30 (1 GiB of archive), which changes the object's layout
 * and deoptimizes every function compiled for it: a wave of recompilation in every backup of
 * more than 1 GiB.
 */
export const DOUBLE_FIELD = 0.5;
