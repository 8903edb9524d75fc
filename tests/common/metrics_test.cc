#include "common/metrics.h"

#include "gtest/gtest.h"
