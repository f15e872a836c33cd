-- wrk script: POST the body in $WRK_BODY (a file) with $WRK_HEADERS ("Name: value;Name: value").
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for pair in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^;]+") do
  local k, v = pair:match("^%s*(.-)%s*:%s*(.-)%s*$")
  wrk.headers[k] = v
end
