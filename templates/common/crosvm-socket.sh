socket={{ socket }}
# crosvm takes the socket as an argument: a relative path starting with '-' would be an option.
case $socket in -*) socket=./$socket ;; esac
