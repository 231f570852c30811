/* bench/scale.h: the live-count benchmark (dkscale): the result lines `dkscale run` writes and
 * `dkscale report` reads (scale.c measures, scale_report.c turns the lines into the markdown
 * tables, the JSON file and the SVG plot).
 *
 * A result line is tab-separated:
 *   P case param subject live reached metric median q1 q3 trials note values
 * case     sweep | churn | threads | handoff | mapper | rss
 * param    the buffer size in bytes ("mixed" for churn)
 * subject  dmakit | dpdk | glibc | dmakit_soft_mapper | dmakit_no_mapper | floor (the sweep's release
 *          floor: dmakit's buffers, the descriptor read and the bytes zeroed, no allocator work)
 * live     the live count asked for (threads: the thread count; handoff: the ring's slots)
 * reached  the live count reached (below `live` when a trial ran out of its time budget)
 * metric   create | translate | release (ns per operation), step (ns per release+create),
 *          pair (ns per create+release, all threads together), buffer (ns per buffer handed
 *          from one thread to the other), rss | hugetlb | heap (bytes per live buffer)
 * median, q1, q3 over `trials` trials; -1 when the subject could not run (the note says why);
 * values: every trial's value, comma-separated, in the order they ran.
 * An information line is `I key value`. */
#ifndef DKB_SCALE_H
#define DKB_SCALE_H

#define SCALE_FIELDS 13

int scale_report(int argc, char **argv);

#endif
