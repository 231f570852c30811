/* fuzz/model.h: an independent model of IOBufferMemoryDescriptor, written from REFERENCE.md
 * §2-§4 plus dmakit's documented departures (docs/departures.md), for the libFuzzer harness.
 * It does not call src/iokit/plan.c or any library code: given the arguments of a factory it
 * predicts whether creation must succeed, must fail or may fail (with which codes), and for a
 * live buffer it predicts every method's result from a small state (length, flags, prepare
 * count, purgeable state) and a shadow copy of the contents. */
#ifndef DK_FUZZ_MODEL_H
#define DK_FUZZ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dmakit/dmakit.h>

typedef enum model_factory {
  MF_IN_TASK_WITH_OPTIONS, MF_IN_TASK_WITH_PHYSICAL_MASK, MF_WITH_OPTIONS, MF_WITH_CAPACITY,
  MF_WITH_BYTES, MF_ALLOC_INIT, MF_IN_TASK_WITH_CONSTRAINTS, MF__COUNT
} model_factory;

typedef enum model_verdict { MV_MUST_SUCCEED, MV_MUST_FAIL, MV_MAY_FAIL } model_verdict;

/* The machine facts the model needs (not derived from the library). */
typedef struct model_env {
  uint64_t page;        /* sysconf page size */
  uint64_t ram_top;     /* highest RAM address + 1, 0 if unknown */
  bool     frames;      /* pagemap shows frame numbers (root) */
} model_env;

typedef struct model_request {
  model_factory  factory;
  bool           null_task;
  uint32_t       options;     /* options, or the direction of withCapacity/withBytes */
  uint64_t       capacity;
  uint64_t       alignment;
  uint64_t       mask;
  bool           contiguous;  /* withCapacity/withBytes */
  dk_constraints c;           /* inTaskWithConstraints */
} model_request;

typedef struct model_create {
  model_verdict verdict;
  IOReturn      codes[4];     /* acceptable failure codes; ncodes 0 = any */
  int           ncodes;
  const char   *why;          /* the rule that decided */
  /* what a successful buffer must look like */
  uint64_t capacity;
  uint32_t flags;             /* getFlags() */
  bool     pageable, purgeable, null_task;
  uint32_t prepare_count;
  /* physical promises to verify on success (root only) */
  uint64_t limit;             /* highest allowed address, 0 none */
  uint64_t low;
  uint64_t phys_align;        /* power of two, 0/1 none; UINT64_MAX = impossible (> 2^63) */
  bool     contig;
  uint64_t boundary, max_segment_size;
  uint32_t max_segments;
} model_create;

void model_predict_create(const model_request *rq, const model_env *env, model_create *out);

/* ---- a live buffer -------------------------------------------------------------------- */
typedef struct model_buf {
  uint64_t capacity, length;
  uint32_t flags;
  uint32_t wire_count;
  bool     pageable, purgeable, null_task;
  uint32_t purgeable_state;  /* 0 = never set (reads as NonVolatile) */
  uint8_t *shadow;           /* capacity bytes */
} model_buf;

void model_buf_init(model_buf *m, const model_create *c);
void model_buf_free(model_buf *m);

void model_setLength(model_buf *m, uint64_t len);
/* bytes may be NULL (zero-fill); returns the value appendBytes must return. */
bool model_appendBytes(model_buf *m, const uint8_t *bytes, uint64_t n);
/* getBytesNoCopyRange: true when the result must be base + start. */
bool model_range_ptr_ok(const model_buf *m, uint64_t start, uint64_t n);
/* readBytes / writeBytes expected counts; writeBytes also updates the shadow. */
uint64_t model_readBytes(const model_buf *m, uint64_t off, uint64_t n);
uint64_t model_writeBytes(model_buf *m, uint64_t off, const uint8_t *src, uint64_t n);
IOReturn model_prepare(model_buf *m, uint32_t dir);
IOReturn model_complete(model_buf *m, uint32_t dir);
/* Expected result; *alt gets a second acceptable result (or the same). */
IOReturn model_performOperation(const model_buf *m, uint32_t op, uint64_t off, uint64_t len,
                                IOReturn *alt);
/* Expected result and, when it sets one, the old state. *old_set says whether *old is written. */
IOReturn model_setPurgeable(model_buf *m, uint32_t state, uint32_t *old, bool *old_set);
void model_setDirection(model_buf *m, uint32_t dir);
/* getPhysicalSegment: whether it must return a nonzero address (else 0 and length 0). */
bool model_phys_ok(const model_buf *m, const model_env *env, uint64_t off);

#endif
