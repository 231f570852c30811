/* src/base/options.c: dmakit's tunables, one table, each with a DMAKIT_<NAME> environment
 * override read once. */
#include "base/base.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct option_desc { const char *name; long dflt; } option_desc;

static const option_desc g_desc[DK_OPTION__COUNT] = {
  [DK_OPTION_STRICT_CACHE_MODE] = { "STRICT_CACHE_MODE", 0 },
  [DK_OPTION_REQUIRE_PIN]       = { "REQUIRE_PIN", 1 },
  [DK_OPTION_POOL]              = { "POOL", 1 },
  [DK_OPTION_POOL_MAX_MB]       = { "POOL_MAX_MB", 4096 },
  [DK_OPTION_POOL_GROW_MB]      = { "POOL_GROW_MB", 32 },
  [DK_OPTION_LOWMEM_SEARCH_MB]  = { "LOWMEM_SEARCH_MB", 2048 },
  [DK_OPTION_LOWMEM_SEARCH_MS]  = { "LOWMEM_SEARCH_MS", 3000 },
  [DK_OPTION_SHARE_TIMEOUT_MS]  = { "SHARE_TIMEOUT_MS", 5000 },
  [DK_OPTION_MAPPER_DEBUG]      = { "MAPPER_DEBUG", 0 },
  [DK_OPTION_MEMORY_MARGIN_MB]  = { "MEMORY_MARGIN_MB", -1 },
};
static _Atomic long g_value[DK_OPTION__COUNT];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic int g_loaded;
_Atomic uint64_t dk__config_gen_v;

void dk__config_bump(void) { atomic_fetch_add_explicit(&dk__config_gen_v, 1, memory_order_acq_rel); }

static void load(void)
{
  for (int i = 0; i < DK_OPTION__COUNT; i++) {
    char env[64] = "DMAKIT_";
    size_t n = 7;
    for (const char *s = g_desc[i].name; *s && n + 1 < sizeof env; s++) env[n++] = *s;
    env[n] = '\0';
    const char *v = getenv(env);
    atomic_store(&g_value[i], v && *v ? strtol(v, NULL, 0) : g_desc[i].dflt);
  }
  atomic_store_explicit(&g_loaded, 1, memory_order_release);
}

long dk__option(dk_option o)
{
  if (__builtin_expect(!atomic_load_explicit(&g_loaded, memory_order_acquire), 0)) pthread_once(&g_once, load);
  return (unsigned)o < DK_OPTION__COUNT ? atomic_load_explicit(&g_value[o], memory_order_relaxed) : 0;
}

long dk_option_get(dk_option o) { return dk__option(o); }

void dk_option_set(dk_option o, long value)
{
  pthread_once(&g_once, load);
  if ((unsigned)o < DK_OPTION__COUNT) atomic_store(&g_value[o], value);
  dk__config_bump();
}

const char *dk_option_name(dk_option o)
{
  return (unsigned)o < DK_OPTION__COUNT ? g_desc[o].name : "unknown";
}
