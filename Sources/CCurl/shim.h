#pragma once
#include <sys/types.h>
#include <sys/select.h>
#include <curl/curl.h>
